"""Widgets: thin views over nbkit's plain-Python core (config, memory model, trainer)."""


def launch(*args, **kwargs):
    from .launch import launch as _launch

    return _launch(*args, **kwargs)


def chat(*args, **kwargs):
    from .chat import chat as _chat

    return _chat(*args, **kwargs)
