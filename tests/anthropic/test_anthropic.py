"""hearth's Anthropic Messages API, spoken to by the official `anthropic` package.

Run by tests/anthropic.rs against a live server: HEARTH_URL is its base URL
and HEARTH_API_KEY a key it accepts (sent as `x-api-key`, as the SDK does).
Uses only the standard library besides anthropic.
"""

import json
import os
import unittest
import urllib.request

import anthropic

URL = os.environ["HEARTH_URL"]
KEY = os.environ["HEARTH_API_KEY"]
USER = [{"role": "user", "content": "Say hello."}]


def native(path, body):
    """POST to one of hearth's own routes."""
    req = urllib.request.Request(
        URL + path,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {KEY}"},
    )
    with urllib.request.urlopen(req) as r:
        return json.load(r)


WEATHER = [{
    "name": "get_weather", "description": "The current weather in a city",
    "input_schema": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 30},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"], "additionalProperties": False},
}]


class AnthropicCompat(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.client = anthropic.Anthropic(base_url=URL, api_key=KEY, max_retries=0)
        native("/documents", {
            "id": "volcano",
            "text": "Mount Zorblax is a dormant volcano on the island of Quillon. It last erupted in the year 1723.",
        })

    def test_messages_on_both_pipelines_whole_and_streamed(self):
        for model, system, messages in [
            ("hearth-fine-tuned", "Be brief.", USER),
            ("hearth-rag", None, [{"role": "user", "content": "When did Mount Zorblax last erupt?"}]),
        ]:
            extra = {"system": system} if system else {}
            whole = self.client.messages.create(
                model=model, messages=messages, max_tokens=16, **extra)
            self.assertEqual(whole.type, "message")
            self.assertTrue(whole.id.startswith("msg_"))
            self.assertEqual(whole.role, "assistant")
            self.assertEqual(whole.model, model)
            self.assertIn(whole.stop_reason, ("end_turn", "max_tokens"))
            self.assertIsNone(whole.stop_sequence)
            [block] = whole.content
            self.assertEqual(block.type, "text")
            self.assertTrue(block.text)
            self.assertGreater(whole.usage.input_tokens, 0)
            self.assertLessEqual(whole.usage.output_tokens, 16)
            if model == "hearth-rag":
                self.assertEqual(whole.model_extra["sources"][0]["document_id"], "volcano")

            # Streamed through the SDK's helper: the same text, the same end.
            with self.client.messages.stream(
                    model=model, messages=messages, max_tokens=16, **extra) as stream:
                text = "".join(stream.text_stream)
                final = stream.get_final_message()
            self.assertEqual(text, block.text)
            self.assertEqual(final.content[0].text, block.text)
            self.assertEqual(final.stop_reason, whole.stop_reason)
            self.assertEqual(final.usage.output_tokens, whole.usage.output_tokens)
            self.assertEqual(final.usage.input_tokens, whole.usage.input_tokens)

            # The raw events, in Anthropic's order.
            events = [e.type for e in self.client.messages.create(
                model=model, messages=messages, max_tokens=16, stream=True, **extra)]
            self.assertEqual(events[0], "message_start")
            self.assertEqual(events[1], "content_block_start")
            self.assertEqual(set(events[2:-3]), {"content_block_delta"})
            self.assertEqual(events[-3:], ["content_block_stop", "message_delta", "message_stop"])

    def test_max_tokens_and_stop_sequences(self):
        r = self.client.messages.create(
            model="hearth-fine-tuned", max_tokens=3,
            messages=[{"role": "user", "content": "Count from one to twenty."}])
        self.assertEqual(r.stop_reason, "max_tokens")
        self.assertEqual(r.usage.output_tokens, 3)
        r = self.client.messages.create(
            model="hearth-fine-tuned", max_tokens=40, stop_sequences=["5", "five"],
            messages=[{"role": "user", "content": "Count from 1 to 10 with digits, separated by commas."}])
        self.assertEqual(r.stop_reason, "stop_sequence", r.content)
        self.assertIn(r.stop_sequence, ["5", "five"])
        self.assertNotIn(r.stop_sequence, r.content[0].text)

    def test_structured_output_through_output_config(self):
        schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20}},
                  "required": ["name"], "additionalProperties": False}
        r = self.client.messages.create(
            model="hearth-fine-tuned", max_tokens=40,
            messages=[{"role": "user", "content": "Name a crab as JSON."}],
            output_config={"format": {"type": "json_schema", "schema": schema}})
        self.assertEqual(r.stop_reason, "end_turn", r.content)
        self.assertIsInstance(json.loads(r.content[0].text)["name"], str)

    def test_count_tokens_is_the_prompt_a_message_takes(self):
        count = self.client.messages.count_tokens(
            model="hearth-fine-tuned", system="Be brief.", messages=USER)
        r = self.client.messages.create(
            model="hearth-fine-tuned", system="Be brief.", messages=USER, max_tokens=2)
        self.assertEqual(count.input_tokens, r.usage.input_tokens)
        with_tools = self.client.messages.count_tokens(
            model="hearth-fine-tuned", messages=USER, tools=WEATHER)
        self.assertGreater(with_tools.input_tokens, count.input_tokens)

    def test_tools_round_trip(self):
        messages = [{"role": "user", "content": "What is the weather in Paris?"}]
        r = self.client.messages.create(
            model="hearth-fine-tuned", messages=messages, tools=WEATHER,
            tool_choice={"type": "any"}, max_tokens=64)
        self.assertEqual(r.stop_reason, "tool_use")
        [call] = [b for b in r.content if b.type == "tool_use"]
        self.assertEqual(call.name, "get_weather")
        self.assertEqual(set(call.input), {"city", "unit"})
        self.assertIn(call.input["unit"], ["celsius", "fahrenheit"])
        # Streamed: the same call, its input as partial JSON.
        with self.client.messages.stream(
                model="hearth-fine-tuned", messages=messages, tools=WEATHER, max_tokens=64,
                tool_choice={"type": "tool", "name": "get_weather"}) as stream:
            pieces = sum(1 for e in stream if e.type == "content_block_delta"
                         and e.delta.type == "input_json_delta")
            final = stream.get_final_message()
        self.assertEqual(final.stop_reason, "tool_use")
        [streamed] = [b for b in final.content if b.type == "tool_use"]
        self.assertEqual((streamed.name, streamed.input), (call.name, call.input))
        self.assertGreater(pieces, 2)
        # The result goes back as a tool_result block; the model answers in text.
        messages += [
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in r.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                          "content": json.dumps({"temperature": 21, "sky": "sunny"})}]},
        ]
        r = self.client.messages.create(
            model="hearth-fine-tuned", messages=messages, tools=WEATHER,
            tool_choice={"type": "none"}, max_tokens=24)
        self.assertEqual([b.type for b in r.content], ["text"])
        self.assertFalse(r.content[0].text.startswith("<"), r.content[0].text)

    def test_errors_have_anthropics_shape(self):
        with self.assertRaises(anthropic.NotFoundError) as e:
            self.client.messages.create(model="claude-imaginary", messages=USER, max_tokens=4)
        self.assertEqual(e.exception.body["type"], "error")
        self.assertEqual(e.exception.body["error"]["type"], "not_found_error")
        for bad, field in [
            ({"extra_body": {"temperature": 5}}, "temperature"),
            ({"max_tokens": 0}, "max_tokens"),
            ({"tools": WEATHER, "tool_choice": {"type": "tool", "name": "nope"}}, "tool_choice"),
            ({"tools": [{"name": "f", "input_schema": {"type": "object", "properties": {"x": {"type": "strin"}}}}]}, "tools"),
            ({"messages": [{"role": "user", "content": [{"type": "image", "source": {
                "type": "base64", "media_type": "image/png", "data": "AA=="}}]}]}, "messages"),
        ]:
            args = {"model": "hearth-fine-tuned", "messages": USER, "max_tokens": 8, **bad}
            with self.assertRaises(anthropic.BadRequestError) as e:
                self.client.messages.create(**args)
            error = e.exception.body["error"]
            self.assertEqual(error["type"], "invalid_request_error", error)
            self.assertTrue(error["message"].startswith(field), error)
        # A missing max_tokens, past the SDK's own check.
        with self.assertRaises(anthropic.BadRequestError) as e:
            self.client.post("/v1/messages", cast_to=object,
                             body={"model": "hearth-fine-tuned", "messages": USER})
        self.assertTrue(e.exception.body["error"]["message"].startswith("max_tokens"))
        anonymous = anthropic.Anthropic(base_url=URL, api_key="wrong-key-0000", max_retries=0)
        with self.assertRaises(anthropic.AuthenticationError) as e:
            anonymous.messages.create(model="hearth-fine-tuned", messages=USER, max_tokens=4)
        self.assertEqual(e.exception.body["error"]["type"], "authentication_error")


if __name__ == "__main__":
    unittest.main(verbosity=2)
