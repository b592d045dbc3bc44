"""Delivery: turning a due notification into a message and sending it. The deliverer,
composing and rendering, SMS text and budget, previews, and the channels."""
