"""Twinsight's Gradio UI: one module per tab; `app.py` composes them."""
