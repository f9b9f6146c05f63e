"""operator_registry: one deployment per mobile operator. Answers messengers' VerifySubscriber
requests, keeps contracts, agreements and bindings, and relays contract terminations to the
notifier through a transactional outbox."""
