"""Delivery: turning a due notification into a message and sending it. The deliverer,
retries and the fallback to the other channel, composing and rendering, SMS text and
budget, previews, and the channels."""
