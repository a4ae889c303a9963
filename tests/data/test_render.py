"""Rendering rows as (prompt, response): templates, custom fields, chat messages."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from delift_ray.errors import DeliftError
from tests.data.helpers import good, jline, read, write_lines


def test_braces_in_data_and_custom_fields(tmp_path: Path) -> None:
    row = {"question": "Fill {0} and {name}}", "context": "{", "answer": "{}"}
    es = read(
        write_lines(tmp_path / "p.jsonl", [jline(row)]),
        instruction_field="question",
        input_field="context",
        output_field="answer",
        prompt_template="Q: {question} | {input}\n",
        response_template=" {answer}",
    )
    assert es.xs == ["Q: Fill {0} and {name}} | {\n"] and es.ys == [" {}"]


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("Q: {query}\n", "unknown placeholder {query}"),
        ("Q: {instruction} {output}\n", "unknown placeholder {output}"),
        ("Q: {instruction\n", "not a valid template"),
    ],
)
def test_bad_prompt_template(tmp_path: Path, template: str, message: str) -> None:
    path = write_lines(tmp_path / "p.jsonl", [jline(good(1))])
    with pytest.raises(DeliftError, match="prompt_template") as err:
        read(path, prompt_template=template)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_messages_render_and_reject(tmp_path: Path) -> None:
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    rows = [
        {"messages": chat, "id": 7},
        {"messages": "hi"},
        {"messages": []},
        {"messages": [{"role": "user", "content": "q"}, "a"]},
        {"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "a"}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "a"}]},
        {"messages": [{"role": "assistant", "content": "a"}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}]},
        {"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]},
        {"chat": chat},
    ]
    es = read(write_lines(tmp_path / "c.jsonl", [jline(r) for r in rows]), format="messages")
    assert es.xs == ["system: Be brief.\nuser: 2+2?\n"] and es.ys == [" 4"]
    assert es.examples[0].record == rows[0]
    assert {r.row: r.reason for r in es.rejects} == {
        2: "field 'messages' must be a list of messages, got str",
        3: "field 'messages' is empty",
        4: "messages[1] must be an object with role and content, got str",
        5: "messages[0].content must be a string or a list of text parts, got int",
        6: "last message must have role 'assistant', got 'user'",
        7: "no messages before the assistant reply",
        8: "empty response",
        9: "messages[0] has no 'content'",
        10: "missing field 'messages'",
    }


def test_messages_from_parquet(tmp_path: Path) -> None:
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    pq.write_table(pa.Table.from_pylist([{"messages": chat, "lang": "en"}]), tmp_path / "c.pq")
    es = read(tmp_path / "c.pq", format="messages")
    assert es.xs == ["user: hi\n"] and es.ys == [" hello"] and es.format == "parquet"
