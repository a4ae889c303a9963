"""Read an example set: every row validated and rendered, bad rows kept as rejects with their
reason (never dropped silently), exact duplicates (same x and y) kept once and counted."""

from __future__ import annotations

from delift_ray.config import DataConfig
from delift_ray.data.chat import ChatTemplate
from delift_ray.data.examples import BadRow, Example, ExampleSet, Reject, example_id
from delift_ray.data.render import renderer, rendering
from delift_ray.data.rows import input_rows


def read_examples(cfg: DataConfig, chat: ChatTemplate | None = None) -> ExampleSet:
    """Read, validate and render every row under cfg.path (chat rows through `chat`, the model's
    chat template, if given); raise DeliftError if unreadable."""
    render = renderer(cfg, chat)
    rows, schema, kind = input_rows(cfg.path)
    out = ExampleSet([], [], {}, schema, kind, rendering(cfg, chat))
    seen: set[str] = set()
    for source, row, record in rows:
        if isinstance(record, str):
            out.rejects.append(Reject(source, row, record))
            continue
        try:
            x, y, parts = render(record)
        except BadRow as e:
            out.rejects.append(Reject(source, row, str(e)))
            continue
        eid = example_id(x, y)
        if eid in seen:
            out.duplicates[eid] = out.duplicates.get(eid, 0) + 1
        else:
            seen.add(eid)
            out.examples.append(Example(eid, x, y, source, row, record, parts))
    return out
