"""hearth's OpenAI-compatible API, spoken to by the official `openai` package.

Run by tests/openai.rs against a live server: HEARTH_URL is its base URL and
HEARTH_API_KEY a key it accepts. Uses only the standard library besides openai.
"""

import base64
import json
import os
import struct
import unittest
import urllib.request

import openai

URL = os.environ["HEARTH_URL"]
KEY = os.environ["HEARTH_API_KEY"]


def native(path, body):
    """POST to one of hearth's own routes."""
    req = urllib.request.Request(
        URL + path,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {KEY}"},
    )
    with urllib.request.urlopen(req) as r:
        return json.load(r)


class OpenAICompat(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.client = openai.OpenAI(base_url=URL + "/v1", api_key=KEY, max_retries=0)
        native("/documents", {
            "id": "volcano",
            "text": "Mount Zorblax is a dormant volcano on the island of Quillon. It last erupted in the year 1723.",
        })
        models = cls.client.models.list()
        cls.ids = [m.id for m in models.data]
        cls.embedder = [i for i in cls.ids if "minilm" in i][0]

    def test_lists_the_pipelines_and_models(self):
        for want in ["hearth-rag", "hearth-fine-tuned", "SmolLM2-135M-Instruct.Q4_1", self.embedder]:
            self.assertIn(want, self.ids)

    def test_chat_on_both_pipelines_whole_and_streamed(self):
        for model, messages in [
            ("hearth-fine-tuned", [{"role": "system", "content": "Be brief."},
                                   {"role": "user", "content": "Say hello."}]),
            ("hearth-rag", [{"role": "user", "content": "When did Mount Zorblax last erupt?"}]),
        ]:
            whole = self.client.chat.completions.create(
                model=model, messages=messages, max_tokens=16, temperature=0)
            self.assertEqual(whole.object, "chat.completion")
            self.assertTrue(whole.id.startswith("chatcmpl-"))
            self.assertEqual(whole.model, model)
            self.assertTrue(whole.system_fingerprint)
            choice = whole.choices[0]
            self.assertEqual(choice.message.role, "assistant")
            self.assertIn(choice.finish_reason, ("stop", "length"))
            self.assertTrue(choice.message.content)
            u = whole.usage
            self.assertEqual(u.total_tokens, u.prompt_tokens + u.completion_tokens)
            self.assertLessEqual(u.completion_tokens, 16)
            if model == "hearth-rag":
                sources = whole.model_extra["sources"]
                self.assertEqual(sources[0]["document_id"], "volcano")

            chunks = list(self.client.chat.completions.create(
                model=model, messages=messages, max_tokens=16, temperature=0,
                stream=True, stream_options={"include_usage": True}))
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            self.assertEqual(text, choice.message.content)
            self.assertEqual(chunks[0].choices[0].delta.role, "assistant")
            finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
            self.assertEqual(len(finals), 1)
            self.assertEqual(finals[0].choices[0].finish_reason, choice.finish_reason)
            self.assertEqual(chunks[-1].choices, [])
            self.assertEqual(chunks[-1].usage.completion_tokens, u.completion_tokens)

    def test_length_and_stop(self):
        r = self.client.chat.completions.create(
            model="hearth-fine-tuned", max_completion_tokens=3,
            messages=[{"role": "user", "content": "Count from one to twenty."}])
        self.assertEqual(r.choices[0].finish_reason, "length")
        self.assertEqual(r.usage.completion_tokens, 3)
        r = self.client.completions.create(
            model="hearth-fine-tuned", prompt="1, 2, 3, 4,", max_tokens=12, stop=["7"])
        self.assertEqual(r.choices[0].finish_reason, "stop")
        self.assertNotIn("7", r.choices[0].text)
        self.assertIn("5", r.choices[0].text)

    def test_structured_output_parses_into_a_pydantic_model(self):
        import pydantic  # installed with openai

        class Person(pydantic.BaseModel):
            name: str = pydantic.Field(max_length=20)
            age: int = pydantic.Field(ge=0, le=120)
            languages: list[str] = pydantic.Field(max_length=3)

        r = self.client.chat.completions.parse(
            model="hearth-fine-tuned", response_format=Person, max_tokens=120, temperature=0,
            messages=[{"role": "user", "content": "Describe a programmer."}])
        choice = r.choices[0]
        self.assertEqual(choice.finish_reason, "stop", choice.message.content)
        person = choice.message.parsed
        self.assertIsInstance(person, Person)
        self.assertLessEqual(len(person.languages), 3)
        # And any JSON object.
        r = self.client.chat.completions.create(
            model="hearth-fine-tuned", response_format={"type": "json_object"}, max_tokens=64,
            temperature=0, messages=[{"role": "user", "content": "Describe Rust as JSON."}])
        if r.choices[0].finish_reason == "stop":
            self.assertIsInstance(json.loads(r.choices[0].message.content), dict)

    def test_logprobs(self):
        r = self.client.chat.completions.create(
            model="hearth-fine-tuned", messages=[{"role": "user", "content": "Say hello."}],
            max_tokens=6, temperature=0, logprobs=True, top_logprobs=2)
        content = r.choices[0].logprobs.content
        self.assertEqual("".join(t.token for t in content), r.choices[0].message.content)
        for t in content:
            self.assertLessEqual(t.logprob, 0.0)
            self.assertEqual(len(t.top_logprobs), 2)
            self.assertEqual(t.token, t.top_logprobs[0].token)
        with self.assertRaises(openai.BadRequestError) as e:
            self.client.chat.completions.create(
                model="hearth-fine-tuned", messages=[{"role": "user", "content": "x"}],
                logprobs=True, top_logprobs=21)
        self.assertEqual(e.exception.body["param"], "top_logprobs")

    def test_tools_round_trip(self):
        tools = [{"type": "function", "function": {
            "name": "get_weather", "description": "The current weather in a city",
            "parameters": {"type": "object", "properties": {
                "city": {"type": "string", "maxLength": 30},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                "required": ["city", "unit"], "additionalProperties": False}}}]
        messages = [{"role": "user", "content": "What is the weather in Paris?"}]
        r = self.client.chat.completions.create(
            model="hearth-fine-tuned", messages=messages, tools=tools, tool_choice="required",
            max_tokens=64, temperature=0)
        choice = r.choices[0]
        self.assertEqual(choice.finish_reason, "tool_calls")
        self.assertIsNone(choice.message.content)
        [call] = choice.message.tool_calls
        self.assertEqual(call.type, "function")
        self.assertEqual(call.function.name, "get_weather")
        args = json.loads(call.function.arguments)
        self.assertEqual(set(args), {"city", "unit"})
        self.assertIn(args["unit"], ["celsius", "fahrenheit"])
        # Streamed: the same call, its arguments in pieces.
        stream = self.client.chat.completions.create(
            model="hearth-fine-tuned", messages=messages, tools=tools, max_tokens=64,
            temperature=0, stream=True,
            tool_choice={"type": "function", "function": {"name": "get_weather"}})
        name, arguments, pieces, finish = None, "", 0, None
        for chunk in stream:
            delta = chunk.choices[0].delta
            for c in delta.tool_calls or []:
                self.assertEqual(c.index, 0)
                name = c.function.name or name
                arguments += c.function.arguments or ""
                pieces += 1
            finish = chunk.choices[0].finish_reason or finish
        self.assertEqual((name, finish), ("get_weather", "tool_calls"))
        self.assertEqual(json.loads(arguments), args)
        self.assertGreater(pieces, 2)
        # The result goes back as a `tool` message; the model answers in text.
        messages += [choice.message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id,
                      "content": json.dumps({"temperature": 21, "sky": "sunny"})}]
        r = self.client.chat.completions.create(
            model="hearth-fine-tuned", messages=messages, tools=tools, tool_choice="none",
            max_tokens=24, temperature=0)
        self.assertIsNone(r.choices[0].message.tool_calls)
        content = r.choices[0].message.content
        self.assertTrue(content and not content.startswith("<"), content)
        # Mistakes are 400s naming the field.
        for bad, param in [
            ({"tools": tools, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
            ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]}, "tools"),
            ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "strin"}}}}}]}, "tools"),
        ]:
            with self.assertRaises(openai.BadRequestError) as e:
                self.client.chat.completions.create(
                    model="hearth-fine-tuned", messages=messages[:1], max_tokens=8, **bad)
            self.assertEqual(e.exception.param, param, e.exception.message)

    def test_responses_whole_streamed_and_with_tools(self):
        for model, input in [
            ("hearth-fine-tuned", "Say hello."),
            ("hearth-rag", [{"role": "user", "content": "When did Mount Zorblax last erupt?"}]),
        ]:
            whole = self.client.responses.create(
                model=model, input=input, instructions="Be brief.", max_output_tokens=16, temperature=0)
            self.assertEqual(whole.object, "response")
            self.assertTrue(whole.id.startswith("resp_"))
            self.assertIn(whole.status, ("completed", "incomplete"))
            self.assertTrue(whole.output_text)
            self.assertEqual(whole.usage.total_tokens, whole.usage.input_tokens + whole.usage.output_tokens)
            self.assertLessEqual(whole.usage.output_tokens, 16)
            # Streamed: the same text, ending as OpenAI ends a response cut
            # by max_output_tokens (`response.incomplete`, which the SDK's
            # `stream()` helper does not take as an end) or a whole one.
            events = list(self.client.responses.create(
                model=model, input=input, instructions="Be brief.", max_output_tokens=16,
                temperature=0, stream=True))
            self.assertEqual(events[0].type, "response.created")
            self.assertEqual([e.sequence_number for e in events], list(range(len(events))))
            deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
            self.assertEqual(deltas, whole.output_text)
            final = events[-1]
            self.assertEqual(final.type, f"response.{whole.status}")
            self.assertEqual(final.response.id, events[0].response.id)
            self.assertEqual(final.response.output_text, whole.output_text)
            self.assertEqual(final.response.usage.output_tokens, whole.usage.output_tokens)
        # Structured output, parsed by the SDK.
        import pydantic

        class City(pydantic.BaseModel):
            name: str = pydantic.Field(max_length=20)

        parsed = self.client.responses.parse(
            model="hearth-fine-tuned", input="Name a city in France.", text_format=City,
            max_output_tokens=40, temperature=0)
        self.assertIsInstance(parsed.output_parsed, City)
        # A function call, its output sent back as an item, then text.
        tools = [{"type": "function", "name": "get_weather", "description": "The weather in a city",
                  "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}},
                                 "required": ["city"], "additionalProperties": False}}]
        r = self.client.responses.create(
            model="hearth-fine-tuned", input="What is the weather in Paris?", tools=tools,
            tool_choice="required", max_output_tokens=48, temperature=0)
        [call] = [o for o in r.output if o.type == "function_call"]
        self.assertEqual(call.name, "get_weather")
        self.assertIn("city", json.loads(call.arguments))
        with self.client.responses.stream(
                model="hearth-fine-tuned", input="What is the weather in Paris?", tools=tools,
                tool_choice={"type": "function", "name": "get_weather"}, max_output_tokens=48,
                temperature=0) as stream:
            final = stream.get_final_response()
        [streamed] = [o for o in final.output if o.type == "function_call"]
        self.assertEqual(json.loads(streamed.arguments), json.loads(call.arguments))
        answer = self.client.responses.create(
            model="hearth-fine-tuned", tools=tools, tool_choice="none", max_output_tokens=24, temperature=0,
            input=[{"role": "user", "content": "What is the weather in Paris?"},
                   {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
                   {"type": "function_call_output", "call_id": call.call_id, "output": "{\"temperature\": 21}"}])
        self.assertTrue(answer.output_text and not answer.output_text.startswith("<"), answer.output_text)
        # Nothing is stored: asking to store, or to continue a stored one, is a 400.
        for bad in [{"store": True}, {"previous_response_id": "resp_123"}]:
            with self.assertRaises(openai.BadRequestError) as e:
                self.client.responses.create(model="hearth-fine-tuned", input="hi", **bad)
            self.assertEqual(e.exception.param, list(bad)[0])

    def test_completions_whole_and_streamed(self):
        whole = self.client.completions.create(
            model="hearth-fine-tuned", prompt="The capital of France is", max_tokens=4)
        self.assertEqual(whole.object, "text_completion")
        self.assertIn("Paris", whole.choices[0].text)
        streamed = self.client.completions.create(
            model="hearth-fine-tuned", prompt="The capital of France is", max_tokens=4, stream=True)
        self.assertEqual("".join(c.choices[0].text for c in streamed), whole.choices[0].text)

    def test_embeddings_match_the_native_route(self):
        texts = ["What is ownership?", "Ferris is a crab."]
        want = native("/embed", {"input": texts})["embeddings"]
        one = self.client.embeddings.create(model=self.embedder, input=texts[0], encoding_format="float")
        self.assertEqual(len(one.data), 1)
        self.assertEqual(one.data[0].embedding, want[0])
        self.assertGreater(one.usage.prompt_tokens, 0)
        batch = self.client.embeddings.create(model=self.embedder, input=texts, encoding_format="float")
        self.assertEqual([d.index for d in batch.data], [0, 1])
        self.assertEqual([d.embedding for d in batch.data], want)
        # The SDK's default asks for base64 and decodes it itself.
        default = self.client.embeddings.create(model=self.embedder, input=texts)
        for got, exp in zip(default.data, want):
            self.assertEqual(got.embedding, exp)
        raw = self.client.embeddings.with_raw_response.create(
            model=self.embedder, input=texts[1], encoding_format="base64")
        b64 = json.loads(raw.text)["data"][0]["embedding"]
        decoded = list(struct.unpack(f"<{len(want[1])}f", base64.b64decode(b64)))
        self.assertEqual(decoded, want[1])

    def test_errors_have_openai_shape(self):
        with self.assertRaises(openai.NotFoundError) as e:
            self.client.chat.completions.create(
                model="gpt-imaginary", messages=[{"role": "user", "content": "hi"}])
        self.assertEqual(e.exception.code, "model_not_found")
        self.assertEqual(e.exception.param, "model")
        for bad in [{"n": 2}, {"temperature": 5}, {"max_tokens": 0}]:
            with self.assertRaises(openai.BadRequestError) as e:
                self.client.chat.completions.create(
                    model="hearth-fine-tuned", messages=[{"role": "user", "content": "hi"}], **bad)
            self.assertEqual(e.exception.param, list(bad)[0], bad)
        with self.assertRaises(openai.BadRequestError) as e:
            self.client.embeddings.create(model=self.embedder, input=[[1, 2, 3]])
        self.assertEqual(e.exception.param, "input")
        with self.assertRaises(openai.NotFoundError):
            self.client.embeddings.create(model="text-embedding-3-small", input="hi")
        anonymous = openai.OpenAI(base_url=URL + "/v1", api_key="wrong-key-0000", max_retries=0)
        with self.assertRaises(openai.AuthenticationError):
            anonymous.models.list()


if __name__ == "__main__":
    unittest.main(verbosity=2)
