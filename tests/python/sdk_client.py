"""Drives a running switchboard with the official OpenAI Python SDK.

Usage: python3 sdk_client.py BASE_URL
Exits non-zero (with an assertion message) if anything is off.
"""
import json
import sys

import openai
from openai import OpenAI

base_url = sys.argv[1]
client = OpenAI(base_url=base_url, api_key="unused", max_retries=0)

# Plain, through an OpenAI-compatible provider.
r = client.chat.completions.with_raw_response.create(
    model="gpt-mini", messages=[{"role": "user", "content": "hi"}]
)
completion = r.parse()
assert completion.id == r.headers["x-switchboard-request-id"], completion.id
assert completion.model == "gpt-mini", completion.model
assert completion.choices[0].message.content == "Hello from openai.", completion
assert completion.usage.prompt_tokens == 12

# Streaming, through the Anthropic provider, with router options in extra_body.
stream = client.chat.completions.create(
    model="claude-haiku",
    messages=[{"role": "user", "content": "hi"}],
    stream=True,
    stream_options={"include_usage": True},
    extra_body={"switchboard": {"tier": "free", "user": "sdk-user"}},
)
text, ids, usage = "", set(), None
for chunk in stream:
    ids.add(chunk.id)
    if chunk.choices and chunk.choices[0].delta.content:
        text += chunk.choices[0].delta.content
    if chunk.usage:
        usage = chunk.usage
assert text == "Hello from claude.", text
assert len(ids) == 1 and next(iter(ids)).startswith("chatcmpl-"), ids
assert usage is not None and usage.completion_tokens == 9, usage

# Tools, through the Anthropic provider.
tools = [{"type": "function", "function": {"name": "get_weather", "description": "weather",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
completion = client.chat.completions.create(
    model="claude-haiku", messages=[{"role": "user", "content": "weather in Paris?"}], tools=tools
)
call = completion.choices[0].message.tool_calls[0]
assert call.function.name == "get_weather"
assert json.loads(call.function.arguments) == {"city": "Paris"}
assert completion.choices[0].finish_reason == "tool_calls"

# Tools, streamed, through the OpenAI-compatible provider.
stream = client.chat.completions.create(
    model="gpt-mini", messages=[{"role": "user", "content": "weather?"}], tools=tools, stream=True
)
args = ""
for chunk in stream:
    for tc in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
        args += tc.function.arguments or ""
assert json.loads(args) == {"city": "Paris"}, args

# Errors arrive as the SDK's typed exceptions.
try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    raise AssertionError("expected NotFoundError")
except openai.NotFoundError as e:
    assert e.body["code"] == "model_not_found", e.body

print("sdk ok")
