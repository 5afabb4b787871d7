#!/usr/bin/env python3
"""Checks that the official OpenAI Python SDK parses everything tierflow's /v1/chat/completions sends.

Usage: openai_sdk_check.py BASE_URL [--model auto]   (BASE_URL without /v1, e.g. http://127.0.0.1:8080)

Makes a non-streaming call, a streaming call with include_usage and a streamed call with tools that
must come back as parallel tool calls; asserts the SDK parsed every chunk and that every tool call's
arguments are complete, valid JSON objects. Exit status 0 on success, 1 with a message on failure.
"""
import argparse
import json
import sys

import openai

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}},
    {"type": "function", "function": {"name": "get_time", "description": "Current time in an IANA timezone",
        "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]}}},
]


def check_non_streaming(client, model):
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Say hello."}], max_tokens=64)
    assert r.object == "chat.completion", r.object
    assert r.id, "missing id"
    msg = r.choices[0].message
    assert isinstance(msg.content, str) and msg.content, f"empty content: {msg!r}"
    assert r.choices[0].finish_reason == "stop", r.choices[0].finish_reason
    assert r.usage is not None and r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0, r.usage
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, r.usage


def check_streaming(client, model):
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Say hello."}],
                                            max_tokens=64, stream=True, stream_options={"include_usage": True})
    text, finish, usage, chunks = "", None, None, 0
    for chunk in stream:
        chunks += 1
        assert chunk.object == "chat.completion.chunk", chunk.object
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert chunks >= 3, f"only {chunks} chunks"
    assert text, "no streamed text"
    assert finish == "stop", finish
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0, usage


def check_streamed_parallel_tools(client, model):
    stream = client.chat.completions.create(
        model=model, stream=True, tools=TOOLS, tool_choice="auto", max_tokens=256,
        messages=[{"role": "user", "content": "What's the weather in Paris and the time in Tokyo? Use both tools at once."}])
    calls, finish = {}, None
    for chunk in stream:
        for c in chunk.choices:
            finish = c.finish_reason or finish
            for tc in c.delta.tool_calls or []:
                slot = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                if tc.id:
                    assert slot["id"] is None, f"tool call {tc.index} got a second id"
                    slot["id"] = tc.id
                if tc.function and tc.function.name:
                    slot["name"] += tc.function.name
                if tc.function and tc.function.arguments:
                    slot["arguments"] += tc.function.arguments
    assert finish == "tool_calls", finish
    assert len(calls) >= 2, f"expected parallel tool calls, got {calls}"
    assert sorted(calls) == list(range(len(calls))), f"tool indexes not dense: {sorted(calls)}"
    ids = [c["id"] for c in calls.values()]
    assert all(ids) and len(set(ids)) == len(ids), f"bad ids {ids}"
    for i, c in calls.items():
        assert c["name"], f"tool call {i} without a name"
        args = json.loads(c["arguments"])  # raises if incomplete
        assert isinstance(args, dict), f"tool call {i} arguments not an object: {c['arguments']!r}"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("base_url")
    p.add_argument("--model", default="auto")
    a = p.parse_args()
    client = openai.OpenAI(base_url=a.base_url.rstrip("/") + "/v1", api_key="tierflow-test", max_retries=0, timeout=30)
    for check in (check_non_streaming, check_streaming, check_streamed_parallel_tools):
        try:
            check(client, a.model)
        except Exception as e:  # report which check failed, with the cause
            print(f"FAIL {check.__name__}: {type(e).__name__}: {e}", file=sys.stderr)
            return 1
        print(f"ok {check.__name__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
