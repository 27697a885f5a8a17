"""``${VAR}`` expansion over a config file's whole text, as Go's ``os.Expand`` does.

The drop-in config files of s3-orchestrator (the Go product s3orch re-creates) are expanded this
way before YAML parsing, so the same files load unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping


def _is_shell_special(char: str) -> bool:
    return char in "*#$@!?-0123456789"


def _is_alnum(char: str) -> bool:
    return (
        char == "_"
        or ("0" <= char <= "9")
        or ("a" <= char <= "z")
        or ("A" <= char <= "Z")
    )


def _shell_name(text: str, start: int) -> tuple[str, int]:
    """Go's getShellName: the variable name after a ``$`` at ``start - 1``, and its width."""
    remaining = len(text) - start
    if text[start] == "{":
        if (
            remaining > 2
            and _is_shell_special(text[start + 1])
            and text[start + 2] == "}"
        ):
            return text[start + 1], 3
        for offset in range(1, remaining):
            if text[start + offset] == "}":
                if offset == 1:
                    return "", 2  # "${}": bad syntax, eaten
                return text[start + 1 : start + offset], offset + 1
        return "", 1  # "${" without "}": bad syntax, eaten
    if _is_shell_special(text[start]):
        return text[start], 1
    end = start
    while end < len(text) and _is_alnum(text[end]):
        end += 1
    return text[start:end], end - start


def expand_env(text: str, env: Mapping[str, str]) -> str:
    """Replace ``$VAR`` and ``${VAR}`` exactly as Go's ``os.Expand`` does; unset variables expand to "".

    As in s3-orchestrator (whose files must load unchanged) there is no escape: ``$2a$10$...`` bcrypt hashes must come in through a
    variable (``admin_secret: "${UI_ADMIN_SECRET}"``), because values are not expanded again.
    """
    parts: list[str] = []
    copied_to = 0
    index = 0
    while index < len(text):
        if text[index] == "$" and index + 1 < len(text):
            parts.append(text[copied_to:index])
            name, width = _shell_name(text, index + 1)
            if name == "" and width > 0:
                pass  # invalid syntax: Go drops it
            elif name == "":
                parts.append("$")  # a lone "$" stays
            else:
                parts.append(env.get(name, ""))
            index += width
            copied_to = index + 1
        index += 1
    if not parts:
        return text
    parts.append(text[copied_to:])
    return "".join(parts)
