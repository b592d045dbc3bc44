"""Delivery webhooks to integrators (issue 14): every change of a notification, an opt-out,
a client's reply and a rejected event, pushed to each configured endpoint, signed with the
Standard Webhooks scheme, retried on a schedule of its own, never in the way of delivery.

- `catalogue`  the event types and the payload each carries (pure);
- `endpoints`  endpoints as data (`schedules/webhooks.toml`, the environment), validated
               at start-up;
- `outbox`     Redis: the outbox written in the same script as each change, its fan-out to
               endpoints, each message's attempts;
- `retries`    the retry schedule and when an endpoint is disabled (pure);
- `dispatcher` the threads that send, a few per endpoint, with short timeouts;
- `operations` what operators do by hand: `notifier webhooks test` and `replay --since`.
"""
