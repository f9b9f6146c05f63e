"""messenger_gateway: one deployment per messenger. Identifies the messenger's users by mobile
number through their operators (possession by one-time code, then the operator's
VerifySubscriber within the window), answers "may this user send?", and revokes identifications
when the notifier reports that a subscriber's contract ended."""
