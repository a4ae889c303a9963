"""Rows -> (prompt x, response y): alpaca fields through the prompt and response templates, or
chat messages (through the model's chat template when it has one, see chat.py, else as
`role: content` lines). A row that cannot be rendered raises BadRow with the reject reason."""

from __future__ import annotations

import string
from collections.abc import Callable
from typing import Any

from delift_ray.config import DataConfig
from delift_ray.data.chat import (
    CHAT_TEMPLATE,
    PROMPT_TEMPLATE,
    ROLE_LINES,
    ChatTemplate,
    message_text,
)
from delift_ray.data.examples import BadRow, ChatParts, type_name
from delift_ray.errors import DeliftError

Rendered = tuple[str, str, ChatParts | None]


def rendering(cfg: DataConfig, chat: ChatTemplate | None) -> str:
    """How a set's rows are rendered: prompt template, chat template or role lines."""
    if cfg.format != "messages":
        return PROMPT_TEMPLATE
    return CHAT_TEMPLATE if chat is not None else ROLE_LINES


def renderer(
    cfg: DataConfig, chat: ChatTemplate | None = None
) -> Callable[[dict[str, Any]], Rendered]:
    """The function that turns a record into (x, y, chat parts or None) or raises BadRow."""
    if cfg.format == "messages":
        return lambda record: _render_messages(record, cfg.messages_field, chat)
    prompt_names = {"instruction", "input", cfg.instruction_field, cfg.input_field}
    response_names = {"output", cfg.output_field}
    _check_template(cfg.prompt_template, prompt_names, "prompt_template")
    _check_template(cfg.response_template, response_names, "response_template")
    return lambda record: (*_render_alpaca(record, cfg), None)


def _check_template(template: str, names: set[str], key: str) -> None:
    """DeliftError unless `template` formats with exactly the given placeholder names."""
    try:
        used = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
        unknown = sorted(f for f in used if f not in names)
        if unknown:
            raise DeliftError(
                f"data: {key} uses unknown placeholder {{{unknown[0]}}} "
                f"(known: {', '.join('{' + n + '}' for n in sorted(names))})"
            )
        template.format_map(dict.fromkeys(names, ""))
    except (ValueError, KeyError, IndexError, AttributeError) as e:
        raise DeliftError(f"data: {key} is not a valid template: {e}") from None


def _render_alpaca(record: dict[str, Any], cfg: DataConfig) -> tuple[str, str]:
    """x = prompt_template(instruction, input), y = response_template(output)."""
    instruction = _text(record, cfg.instruction_field, required=True)
    inp = _text(record, cfg.input_field, required=False)
    output = _text(record, cfg.output_field, required=True)
    if not instruction.strip():
        raise BadRow("empty instruction")
    if not output.strip():
        raise BadRow("empty response")
    prompt = {"instruction": instruction, "input": inp}
    prompt.update({cfg.instruction_field: instruction, cfg.input_field: inp})
    response = {"output": output, cfg.output_field: output}
    return cfg.prompt_template.format_map(prompt), cfg.response_template.format_map(response)


def _render_messages(record: dict[str, Any], field: str, chat: ChatTemplate | None) -> Rendered:
    """Through the chat template if given; else y = " " + the last (assistant) turn and x = each
    earlier turn as "{role}: {content}\\n" (no "assistant:" cue: the scoring templates frame the
    response themselves). Content may be a string or a list of text parts."""
    if field not in record or record[field] is None:
        raise BadRow(f"missing field '{field}'")
    turns = record[field]
    if not isinstance(turns, list):
        raise BadRow(f"field '{field}' must be a list of messages, got {type_name(turns)}")
    if not turns:
        raise BadRow(f"field '{field}' is empty")
    turns = [_turn(turn, f"{field}[{k}]") for k, turn in enumerate(turns)]
    *context, last = turns
    if last["role"] != "assistant":
        raise BadRow(f"last message must have role 'assistant', got {last['role']!r}")
    if not last["content"].strip():
        raise BadRow("empty response")
    if not context:
        raise BadRow("no messages before the assistant reply")
    if chat is not None:
        return chat.render(turns, field)
    return "".join(f"{t['role']}: {t['content']}\n" for t in context), " " + last["content"], None


def _turn(turn: Any, where: str) -> dict[str, str]:
    """A message as {"role", "content"} strings (text parts joined); BadRow if it is not one."""
    if not isinstance(turn, dict):
        raise BadRow(f"{where} must be an object with role and content, got {type_name(turn)}")
    for key in ("role", "content"):
        if key not in turn:
            raise BadRow(f"{where} has no '{key}'")
    _check_string(turn["role"], f"{where}.role")
    content = message_text(turn["content"], f"{where}.content")
    _check_string(content, f"{where}.content")
    return {"role": turn["role"], "content": content}


def _text(record: dict[str, Any], name: str, *, required: bool) -> str:
    """A string field; an optional one that is missing or null is ""."""
    if record.get(name) is None:
        if required:
            raise BadRow(
                f"missing field '{name}'" if name not in record else f"field '{name}' is null"
            )
        return ""
    value = record[name]
    _check_string(value, f"field '{name}'")
    return value


def _check_string(value: Any, what: str) -> None:
    if not isinstance(value, str):
        raise BadRow(f"{what} must be a string, got {type_name(value)}")
    if "\x00" in value:
        raise BadRow(f"{what} contains a NUL byte")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRow(f"{what} contains an unpaired surrogate") from None
