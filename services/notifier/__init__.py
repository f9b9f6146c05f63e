"""The notifier: takes contract-termination events from operators' registries and streams each
messenger its own, ordered, gap-free, resumable, durable before ack (etcd's watch guarantees)."""
