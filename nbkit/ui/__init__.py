"""Widgets: thin views over nbkit's plain-Python core (config, memory model, trainer).

`launch` and `chat` are functions here, whatever else is imported: their modules are named otherwise
(`launcher`, `chatbox`), so importing one never replaces the function on this package (a re-run cell that says
`from nbkit.ui import launch` always gets the function).
"""


def launch(*args, **kwargs):
    from .launcher import launch as _launch

    return _launch(*args, **kwargs)


def chat(*args, **kwargs):
    from .chatbox import chat as _chat

    return _chat(*args, **kwargs)
