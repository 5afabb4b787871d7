#!/usr/bin/env python3
"""Checks that the official Anthropic Python SDK parses everything tierflow's /v1/messages sends.

Usage: anthropic_sdk_check.py BASE_URL [--model auto]   (BASE_URL without /v1)

Makes a non-streaming call, a streaming call (SDK stream helper, text_stream + final message) and a
streamed call with tools that must come back as parallel tool_use blocks; asserts the SDK parsed
every event, that the raw input_json_delta fragments of each block join into a complete JSON object
and that the SDK's accumulated `input` equals it. Exit status 0 on success, 1 on failure.
"""
import argparse
import json
import sys

import anthropic

TOOLS = [
    {"name": "get_weather", "description": "Current weather for a city",
     "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}},
    {"name": "get_time", "description": "Current time in an IANA timezone",
     "input_schema": {"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]}},
]


def check_non_streaming(client, model):
    m = client.messages.create(model=model, max_tokens=64, messages=[{"role": "user", "content": "Say hello."}])
    assert m.type == "message" and m.role == "assistant", (m.type, m.role)
    assert m.id, "missing id"
    texts = [b.text for b in m.content if b.type == "text"]
    assert texts and texts[0], f"no text block: {m.content!r}"
    assert m.stop_reason == "end_turn", m.stop_reason
    assert m.usage.input_tokens >= 0 and m.usage.output_tokens > 0, m.usage


def check_streaming(client, model):
    with client.messages.stream(model=model, max_tokens=64, messages=[{"role": "user", "content": "Say hello."}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text, "no streamed text"
    assert final.content and final.content[0].type == "text" and final.content[0].text == text, final.content
    assert final.stop_reason == "end_turn", final.stop_reason
    assert final.usage.output_tokens > 0, final.usage


def check_streamed_parallel_tools(client, model):
    partial = {}
    with client.messages.stream(
            model=model, max_tokens=256, tools=TOOLS,
            messages=[{"role": "user", "content": "What's the weather in Paris and the time in Tokyo? Use both tools at once."}]) as s:
        for ev in s:
            if ev.type == "content_block_delta" and ev.delta.type == "input_json_delta":
                partial[ev.index] = partial.get(ev.index, "") + ev.delta.partial_json
        final = s.get_final_message()
    assert final.stop_reason == "tool_use", final.stop_reason
    uses = [(i, b) for i, b in enumerate(final.content) if b.type == "tool_use"]
    assert len(uses) >= 2, f"expected parallel tool_use blocks, got {final.content!r}"
    ids = [b.id for _, b in uses]
    assert all(ids) and len(set(ids)) == len(ids), f"bad ids {ids}"
    for i, b in uses:
        assert b.name, f"tool_use {i} without a name"
        assert isinstance(b.input, dict) and b.input, f"tool_use {i} input not parsed: {b.input!r}"
        raw = json.loads(partial.get(i, "{}"))  # raises if the fragments do not join into JSON
        assert raw == b.input, f"tool_use {i}: fragments {raw!r} != accumulated {b.input!r}"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("base_url")
    p.add_argument("--model", default="auto")
    a = p.parse_args()
    client = anthropic.Anthropic(base_url=a.base_url.rstrip("/"), api_key="tierflow-test", max_retries=0, timeout=30)
    for check in (check_non_streaming, check_streaming, check_streamed_parallel_tools):
        try:
            check(client, a.model)
        except Exception as e:
            print(f"FAIL {check.__name__}: {type(e).__name__}: {e}", file=sys.stderr)
            return 1
        print(f"ok {check.__name__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
