"""Errors tinyc reports to users: one line that names what is wrong and how to fix it."""


class TinycError(Exception):
    """A problem with the user's input (model, data, options, board); printed without traceback,
    on one line: a newline inside it (from a name or a path) is printed as an escape."""
    multiline = False   # the refusals whose breakdown or tool log spans lines by design


class UnsupportedError(TinycError):
    """The model uses something tinyc does not support."""


def printable(text: str, keep_newlines: bool = True) -> str:
    """`text` with every control or other non-printable character written as an escape (\\x1b,
    \\r, \\u202e...): names from a model or board file and paths reach the terminal as text,
    never as terminal commands or extra lines. Multi-line messages (a refusal's breakdown)
    keep their newlines when `keep_newlines`."""
    out = []
    for ch in str(text):
        if ch == "\n" and keep_newlines or ch.isprintable():
            out.append(ch)
        else:
            out.append(repr(ch)[1:-1] if len(repr(ch)) > 3 else f"\\x{ord(ch):02x}")
    return "".join(out)


class ToolFailedError(TinycError):
    """A tool tinyc runs (gcc, PlatformIO, QEMU) failed: the message ends with its last lines."""
    multiline = True
