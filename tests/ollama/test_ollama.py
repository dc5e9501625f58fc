"""hearth's Ollama API, spoken to by the official `ollama` package.

Run by tests/openai.rs against a live server: HEARTH_URL is its base URL
and HEARTH_API_KEY a key it accepts (sent as a bearer token through the
client's headers). Uses only the standard library besides ollama.
"""

import json
import os
import unittest
import urllib.request

import ollama

URL = os.environ["HEARTH_URL"]
KEY = os.environ["HEARTH_API_KEY"]
USER = [{"role": "user", "content": "Say hello."}]
LLM = "SmolLM2-135M-Instruct.Q4_1"


def native(path, body):
    """POST to one of hearth's own routes."""
    req = urllib.request.Request(
        URL + path,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {KEY}"},
    )
    with urllib.request.urlopen(req) as r:
        return json.load(r)


class OllamaCompat(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.client = ollama.Client(host=URL, headers={"authorization": f"Bearer {KEY}"})
        native("/documents", {
            "id": "volcano",
            "text": "Mount Zorblax is a dormant volcano on the island of Quillon. It last erupted in the year 1723.",
        })
        cls.names = [m.model for m in cls.client.list().models]
        cls.embedder = [n for n in cls.names if "minilm" in n][0]

    def test_lists_the_models_loaded_and_available(self):
        for want in ["hearth-rag", "hearth-fine-tuned", LLM]:
            self.assertIn(want + ":latest", self.names)
        llm = [m for m in self.client.list().models if m.model == LLM + ":latest"][0]
        self.assertEqual(llm.details.format, "gguf")
        self.assertEqual(llm.details.family, "llama")
        self.assertGreater(llm.size, 50_000_000)
        self.assertIsNotNone(llm.modified_at)
        loaded = [m.model for m in self.client.ps().models]
        self.assertEqual(sorted(loaded), sorted(self.names))
        show = self.client.show("hearth-fine-tuned")
        self.assertIn("tools", show.capabilities)
        self.assertIn("im_start", show.template)
        self.assertEqual(show.modelinfo["general.architecture"], "llama")
        self.assertEqual(self.client.show(self.embedder).capabilities, ["embedding"])

    def test_chat_on_both_pipelines_whole_and_streamed(self):
        for model, messages in [
            ("hearth-fine-tuned", [{"role": "system", "content": "Be brief."}] + USER),
            ("hearth-rag:latest", [{"role": "user", "content": "When did Mount Zorblax last erupt?"}]),
        ]:
            options = {"num_predict": 16, "temperature": 0}
            whole = self.client.chat(model=model, messages=messages, options=options)
            self.assertEqual(whole.model, model)
            self.assertTrue(whole.done)
            self.assertIn(whole.done_reason, ("stop", "length"))
            self.assertEqual(whole.message.role, "assistant")
            self.assertTrue(whole.message.content)
            self.assertGreater(whole.prompt_eval_count, 0)
            self.assertLessEqual(whole.eval_count, 16)
            self.assertGreater(whole.total_duration, 0)
            if model.startswith("hearth-rag"):
                # The client's model drops fields it does not know: read them raw.
                raw = native("/api/chat", {"model": model, "messages": messages, "stream": False,
                                           "options": options})
                self.assertEqual(raw["sources"][0]["document_id"], "volcano")
            parts = list(self.client.chat(model=model, messages=messages, options=options, stream=True))
            self.assertEqual("".join(p.message.content for p in parts), whole.message.content)
            self.assertTrue(parts[-1].done)
            self.assertFalse(any(p.done for p in parts[:-1]))
            self.assertEqual(parts[-1].eval_count, whole.eval_count)

    def test_generate_raw_and_templated(self):
        r = self.client.generate(model=LLM, prompt="The capital of France is", raw=True,
                                 options={"num_predict": 4, "temperature": 0})
        self.assertIn("Paris", r.response)
        streamed = "".join(p.response for p in self.client.generate(
            model=LLM, prompt="The capital of France is", raw=True,
            options={"num_predict": 4, "temperature": 0}, stream=True))
        self.assertEqual(streamed, r.response)
        r = self.client.generate(model=LLM, system="Be brief.", prompt="Say hello.",
                                 options={"num_predict": 3})
        self.assertEqual(r.done_reason, "length")
        self.assertEqual(r.eval_count, 3)
        # An empty prompt is Ollama's way to load a model.
        self.assertEqual(self.client.generate(model=LLM).done_reason, "load")

    def test_format_and_stop(self):
        schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20}},
                  "required": ["name"], "additionalProperties": False}
        r = self.client.chat(model="hearth-fine-tuned", format=schema,
                             messages=[{"role": "user", "content": "Name a crab as JSON."}],
                             options={"num_predict": 40, "temperature": 0})
        self.assertEqual(r.done_reason, "stop", r.message.content)
        self.assertIsInstance(json.loads(r.message.content)["name"], str)
        r = self.client.generate(model=LLM, prompt="1, 2, 3, 4,", raw=True,
                                 options={"num_predict": 12, "stop": ["7"]})
        self.assertNotIn("7", r.response)
        self.assertIn("5", r.response)

    def test_tools_round_trip(self):
        tools = [{"type": "function", "function": {
            "name": "get_weather", "description": "The current weather in a city",
            "parameters": {"type": "object", "required": ["city"], "properties": {
                "city": {"type": "string", "description": "The city"}}}}}]
        messages = [{"role": "user", "content": "What is the weather in Paris?"}]
        # Ollama has no tool_choice, and this small model answers in text
        # when it may: hearth's `tool_choice` forces a call (sent raw, as the
        # client has no such argument), and the client reads the answer.
        body = {"model": "hearth-fine-tuned", "messages": messages, "tools": tools,
                "tool_choice": "required", "options": {"num_predict": 48}}
        r = ollama.ChatResponse(**native("/api/chat", {**body, "stream": False}))
        self.assertTrue(r.message.tool_calls, r.message.content)
        call = r.message.tool_calls[0]
        self.assertEqual(call.function.name, "get_weather")
        self.assertIsInstance(call.function.arguments["city"], str)
        req = urllib.request.Request(URL + "/api/chat", data=json.dumps(body).encode(), headers={
            "content-type": "application/json", "authorization": f"Bearer {KEY}"})
        with urllib.request.urlopen(req) as stream:
            self.assertEqual(stream.headers["content-type"], "application/x-ndjson")
            parts = [ollama.ChatResponse(**json.loads(line)) for line in stream if line.strip()]
        streamed = [c for p in parts for c in (p.message.tool_calls or [])]
        self.assertEqual([(c.function.name, dict(c.function.arguments)) for c in streamed],
                         [(call.function.name, dict(call.function.arguments))])
        self.assertTrue(parts[-1].done)
        # The call and its result go back through the client; the model answers in text.
        messages += [r.message, {"role": "tool", "tool_name": "get_weather",
                                 "content": json.dumps({"temperature": 21})}]
        answer = self.client.chat(model="hearth-fine-tuned", messages=messages,
                                  options={"num_predict": 24})
        self.assertFalse(answer.message.tool_calls)
        self.assertFalse(answer.message.content.startswith("<"), answer.message.content)

    def test_embeddings_match_the_native_route(self):
        texts = ["What is ownership?", "Ferris is a crab."]
        want = native("/embed", {"input": texts})["embeddings"]
        r = self.client.embed(model=self.embedder, input=texts)
        self.assertEqual([list(e) for e in r.embeddings], want)
        self.assertGreater(r.prompt_eval_count, 0)
        one = self.client.embeddings(model=self.embedder, prompt=texts[0])
        self.assertEqual(list(one.embedding), want[0])

    def test_errors_have_ollamas_shape(self):
        with self.assertRaises(ollama.ResponseError) as e:
            self.client.chat(model="llama-imaginary", messages=USER)
        self.assertEqual(e.exception.status_code, 404)
        self.assertIn("llama-imaginary", e.exception.error)
        for bad, field in [
            ({"options": {"temperature": 5}}, "options.temperature"),
            ({"format": {"type": "object", "properties": {"x": {"type": "strin"}}}}, "format"),
            ({"think": True}, "think"),
        ]:
            with self.assertRaises(ollama.ResponseError) as e:
                self.client.chat(model="hearth-fine-tuned", messages=USER, **bad)
            self.assertEqual(e.exception.status_code, 400, bad)
            self.assertTrue(e.exception.error.startswith(field), e.exception.error)
        with self.assertRaises(ollama.ResponseError) as e:
            self.client.embed(model=LLM, input="hi")
        self.assertEqual(e.exception.status_code, 404)
        stranger = ollama.Client(host=URL, headers={"authorization": "Bearer wrong-key-0000"})
        with self.assertRaises(ollama.ResponseError) as e:
            stranger.list()
        self.assertEqual(e.exception.status_code, 401)
        self.assertIn("API key", e.exception.error)


if __name__ == "__main__":
    unittest.main(verbosity=2)
