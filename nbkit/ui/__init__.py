"""Widgets: thin views over nbkit's plain-Python core (config, memory model, trainer)."""
