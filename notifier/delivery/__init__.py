"""Delivery: turning a due notification into a message and sending it. The send-time
rules and the deliverer, retries and the fallback to the other channel, composing and
rendering, SMS text and budget, previews, and the channels."""
