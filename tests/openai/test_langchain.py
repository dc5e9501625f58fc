"""hearth's OpenAI-compatible API, spoken to by LangChain (`langchain-openai`).

Run by tests/openai.rs against a live server, after test_openai.py:
HEARTH_URL is its base URL and HEARTH_API_KEY a key it accepts. Nothing here
reaches the network: embeddings skip tiktoken's length check, which would
download its encodings.
"""

import json
import os
import unittest

import pydantic
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI, OpenAIEmbeddings

URL = os.environ["HEARTH_URL"]
KEY = os.environ["HEARTH_API_KEY"]


class Person(pydantic.BaseModel):
    """A person."""

    name: str = pydantic.Field(max_length=20)
    age: int = pydantic.Field(ge=0, le=120)
    languages: list[str] = pydantic.Field(max_length=3)


@tool
def get_weather(city: str, unit: str = "celsius") -> str:
    """The current weather in a city."""
    return json.dumps({"city": city, "temperature": 21, "unit": unit, "sky": "sunny"})


def chat(**kwargs):
    return ChatOpenAI(base_url=URL + "/v1", api_key=KEY, model="hearth-fine-tuned",
                      temperature=0, max_retries=0, **kwargs)


class LangChain(unittest.TestCase):
    def test_chat_whole_and_streamed(self):
        llm = chat(max_tokens=12)
        whole = llm.invoke("Say hello.")
        self.assertTrue(whole.content)
        streamed = "".join(c.content for c in llm.stream("Say hello."))
        self.assertEqual(streamed, whole.content)

    def test_structured_output_json_schema(self):
        person = chat(max_tokens=120).with_structured_output(Person, method="json_schema").invoke(
            "Describe a programmer.")
        self.assertIsInstance(person, Person)
        self.assertLessEqual(len(person.languages), 3)

    def test_structured_output_function_calling(self):
        # LangChain asks for one named tool call and reads its arguments.
        person = chat(max_tokens=120).with_structured_output(
            Person, method="function_calling").invoke("Describe a programmer.")
        self.assertIsInstance(person, Person)

    def test_bind_tools_round_trip(self):
        llm = chat(max_tokens=64)
        question = HumanMessage("What is the weather in Paris?")
        asked = llm.bind_tools([get_weather], tool_choice="get_weather").invoke([question])
        [call] = asked.tool_calls
        self.assertEqual(call["name"], "get_weather")
        self.assertIsInstance(call["args"]["city"], str)
        self.assertEqual(asked.response_metadata["finish_reason"], "tool_calls")
        answer = get_weather.invoke(call["args"])
        final = llm.bind_tools([get_weather], tool_choice="none").invoke(
            [question, asked, ToolMessage(answer, tool_call_id=call["id"])])
        self.assertEqual(final.tool_calls, [])
        self.assertTrue(final.content)
        # "auto": text or calls, each well formed.
        auto = llm.bind_tools([get_weather]).invoke([question])
        for c in auto.tool_calls:
            self.assertEqual(c["name"], "get_weather")
        self.assertEqual(auto.invalid_tool_calls, [])
        self.assertTrue(auto.content or auto.tool_calls)

    def test_embeddings(self):
        embedder = [m for m in chat().root_client.models.list().data if "minilm" in m.id][0].id
        emb = OpenAIEmbeddings(base_url=URL + "/v1", api_key=KEY, model=embedder,
                               check_embedding_ctx_length=False, max_retries=0)
        [a, b] = emb.embed_documents(["Rust is a language.", "Paris is a city."])
        self.assertEqual(len(a), 384)
        self.assertAlmostEqual(sum(x * x for x in a), 1.0, places=3)
        self.assertEqual(len(emb.embed_query("Rust")), 384)


if __name__ == "__main__":
    unittest.main(verbosity=2)
