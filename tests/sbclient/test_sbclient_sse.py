"""The Server-Sent Events parser, against the cases of the WHATWG event-stream format."""

from __future__ import annotations

from sbclient.sse import EventStreamParser, ServerSentEvent


def parse(text: str) -> tuple[list[ServerSentEvent], EventStreamParser]:
    parser = EventStreamParser()
    return list(parser.parse(text.splitlines())), parser


def test_events_data_lines_comments_and_retry():
    events, parser = parse(
        "retry: 2000\n\n"
        ": keep-alive\n\n"
        'event: job\ndata: {"state": "running"}\n\n'
        "data: first line\ndata:second line\ndata\n\n"
        'event: end\ndata: {"state": "succeeded"}\n\n'
    )
    assert events == [
        ServerSentEvent("job", '{"state": "running"}'),
        ServerSentEvent("message", "first line\nsecond line\n"),
        ServerSentEvent("end", '{"state": "succeeded"}'),
    ]
    assert parser.retry_ms == 2000


def test_events_without_data_and_unfinished_events_are_dropped():
    events, _ = parse("event: job\n\nevent: job\ndata: kept\n\nevent: end\ndata: cut off")
    assert events == [ServerSentEvent("job", "kept")]


def test_ids_and_invalid_retry_values():
    events, parser = parse("id: 7\nretry: soon\ndata: x\n\nretry: 15\n\n")
    assert events == [ServerSentEvent("message", "x", id="7")]
    assert parser.last_event_id == "7" and parser.retry_ms == 15


def test_the_event_name_resets_after_each_event_and_one_leading_space_is_stripped():
    events, _ = parse("event: job\ndata:  two spaces\n\ndata: plain\n\n")
    assert events == [ServerSentEvent("job", " two spaces"), ServerSentEvent("message", "plain")]
