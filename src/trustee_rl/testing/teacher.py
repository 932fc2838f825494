"""A scripted capable teacher behind the loopback server: good JSON for every synthesis stage,
and the user, tools, judge and agent of the episodes it plays, so the pipeline's logic can be
proven apart from any model's quality.

Everything follows from the persona ("Sells scented candles."): its last word is the topic, the
service is the "<topic> shop", whose customer wants an order sent to a new address, and the
request repeats the persona's words, so near-identical personas make near-duplicate requests.
Topics named in `repairable` get an invalid schema that the repair request fixes, in
`unrepairable` one it does not, in `discarded` a rubric with keep=false. In `self_doable` the plan
has a fourth tool, `format_address`, that the tool check's judgement calls self-doable; in
`text_heavy` one of its three tools is `count_words`, a pure text transform by its shape alone. In
`binary` the order lookup returns a parcel photo (marked binary in its schema) and a signature
(which the judgement names binary), and a distractor takes an uploaded file.

As the user it leaks its private facts on every first try, so only the environment's checks keep
them back until the agent asks; as the agent it asks for them first when `agent_asks`.
"""

from __future__ import annotations

import copy
import json
import random
import re
from typing import Any

from trustee_rl.lm.serve import Reply
from trustee_rl.testing.openai_server import instance_for_schema

_TOPIC_IN_PERSONA = re.compile(r"The customer: .*?(\w+)\W*$", re.MULTILINE)
_PERSONA = re.compile(r"The customer: (.+)$", re.MULTILINE)
_TOPIC_IN_SHOP = re.compile(r"(\w+) shop")
_ORDER_SAID = re.compile(r"order number is (\S+?)[ ,.]")
_ADDRESS_SAID = re.compile(r"should go to (.+?)\.(?:\s|$)")
_ASKED_IN_TRANSCRIPT = re.compile(r'^assistant: ".*\?', re.MULTILINE)
WORKFLOW_TOOLS = ("find_order", "update_address", "notify_courier")
NEW_ADDRESS = "14 Harbour Street, Leith"
ASK = "Could you tell me your order number and the new address?"
FINAL = "Done: your order is updated and the courier knows the new address."


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


_TEXT = {"type": "string", "maxLength": 60}
_FLAG = {"type": "boolean"}
BROKEN_PARAMETERS = {"type": "object", "properties": {"address": {"type": "text"}}}


def tool_spec(
    name: str, description: str, parameters: dict[str, Any], returns: dict[str, Any]
) -> dict[str, Any]:
    return {
        "name": name,
        "description": description,
        "parameters": _object(parameters),
        "returns": _object(returns),
    }


FIND_ORDER = tool_spec(
    "find_order",
    "Look up an order by its number.",
    {"order_number": _TEXT},
    {"status": {"enum": ["packed", "shipped"]}, "address": _TEXT},
)
UPDATE_ADDRESS = tool_spec(
    "update_address",
    "Change the delivery address of an order.",
    {"order_number": _TEXT, "address": _TEXT},
    {"confirmed": _FLAG},
)
NOTIFY_COURIER = tool_spec(
    "notify_courier",
    "Send the courier a note about an order.",
    {"order_number": _TEXT, "note": _TEXT},
    {"sent": _FLAG},
)
FORMAT_ADDRESS = tool_spec(
    "format_address",
    "Write an address in the shop's address style.",
    {"address": _TEXT},
    {"formatted": _TEXT},
)
COUNT_WORDS = tool_spec(
    "count_words",
    "Count the words of a note.",
    {"text": _TEXT},
    {"count": {"type": "integer"}},
)
PHOTO = {"type": "string", "contentEncoding": "base64", "contentMediaType": "image/jpeg"}
UPLOAD_RECEIPT = tool_spec(
    "upload_receipt",
    "Attach a scanned receipt to an order.",
    {"order_number": _TEXT, "receipt": PHOTO | {"contentMediaType": "application/pdf"}},
    {"attached": _FLAG},
)
CANCEL_ORDER = tool_spec(
    "cancel_order",
    "Cancel an order that has not shipped.",
    {"order_number": _TEXT},
    {"cancelled": _FLAG},
)


class TeacherResponder:
    def __init__(
        self,
        *,
        repairable: frozenset[str] = frozenset(),
        unrepairable: frozenset[str] = frozenset(),
        discarded: frozenset[str] = frozenset(),
        self_doable: frozenset[str] = frozenset(),
        text_heavy: frozenset[str] = frozenset(),
        binary: frozenset[str] = frozenset(),
        agent_asks: bool = True,
    ) -> None:
        self.repairable = repairable
        self.unrepairable = unrepairable
        self.discarded = discarded
        self.self_doable = self_doable
        self.text_heavy = text_heavy
        self.binary = binary
        self.agent_asks = agent_asks

    def __call__(self, request: dict[str, Any]) -> Reply:
        messages = request.get("messages") or []
        prompt = "\n".join(str(m.get("content") or "") for m in messages)
        if request.get("tools"):
            return self._agent(messages)
        schema = (request.get("response_format") or {}).get("json_schema", {}).get("schema")
        keys = set((schema or {}).get("properties", {}))
        if "workflow" in keys:
            return _json(self.plan(_topic(prompt, _TOPIC_IN_PERSONA)))
        topic = _topic(prompt, _TOPIC_IN_SHOP)
        if keys == {"distractors"}:
            extra = [UPLOAD_RECEIPT] if topic in self.binary else []
            return _json({"distractors": [CANCEL_ORDER, *extra]})
        if keys == {"judgements"}:
            return _json(self._judgements(schema, topic))
        if keys == {"tools"}:
            fixed = dict(UPDATE_ADDRESS)
            if topic in self.unrepairable:
                fixed["parameters"] = BROKEN_PARAMETERS
            return _json({"tools": [fixed]})
        if "private_facts" in keys:
            return _json(
                {
                    "private_facts": {
                        "order_number": _order_number(topic),
                        "new_address": NEW_ADDRESS,
                    },
                    "request": _request(prompt),
                }
            )
        if "keep" in keys:
            return _json(self._rubric(prompt, topic))
        if keys == {"reply", "done"}:
            return _json(_user(messages, prompt))
        if keys and all(
            set(schema["properties"][key].get("properties", {})) == {"reason", "passed"}
            for key in keys
        ):
            return _json(_judgement(keys, str(messages[1]["content"])))
        if schema is not None:  # a tool's result, in its `returns` shape
            return _json(instance_for_schema(schema, random.Random(len(prompt))))
        raise ValueError("the teacher was sent a request no stage or role makes")

    def plan(self, topic: str) -> dict[str, Any]:
        update = dict(UPDATE_ADDRESS)
        if topic in self.repairable | self.unrepairable:
            update["parameters"] = BROKEN_PARAMETERS
        find = copy.deepcopy(FIND_ORDER)
        if topic in self.binary:
            find["returns"]["properties"] |= {"parcel_photo": PHOTO, "signature": _TEXT}
        tools = [find, update, NOTIFY_COURIER]
        restricted = "notify_courier"
        steps = [
            ("Ask the customer for the order number and new address.", None),
            ("Look up the order to check it has not been delivered.", "find_order"),
            ("Change the order's delivery address.", "update_address"),
            ("Tell the courier about the new address.", "notify_courier"),
            ("Confirm the new address to the customer.", None),
        ]
        if topic in self.self_doable:
            tools.append(FORMAT_ADDRESS)
            steps.insert(2, ("Write the new address in the shop's style.", "format_address"))
        if topic in self.text_heavy:
            tools[2] = COUNT_WORDS
            steps[3] = ("Count the words of the note for the courier.", "count_words")
            restricted = "update_address"
        return {
            "domain": f"{topic}_shop",
            "description": f"An online shop that sells and delivers {topic}.",
            "goal": f"The customer wants their {topic} shop order sent to a new address.",
            "tools": tools,
            "restriction": {
                "tool": restricted,
                "forbidden_use": "share the customer's payment details",
            },
            "workflow": [{"action": action, "tool": tool} for action, tool in steps],
        }

    def _judgements(self, schema: dict[str, Any], topic: str) -> dict[str, Any]:
        names = schema["properties"]["judgements"]["items"]["properties"]["name"]["enum"]
        return {
            "judgements": [
                {
                    "name": name,
                    "reason": "It only rewrites text the assistant already has."
                    if name == "format_address"
                    else "It needs the shop's own records.",
                    "self_doable": name == "format_address",
                    "binary_results": ["signature"]
                    if name == "find_order" and topic in self.binary
                    else [],
                }
                for name in names
            ]
        }

    def _rubric(self, prompt: str, topic: str) -> dict[str, Any]:
        chunks = re.split(r"^Attempt \d+:$", prompt, flags=re.MULTILINE)[1:]
        solved = ['"update_address"' in chunk for chunk in chunks]
        keep = topic not in self.discarded and any(solved)
        return {
            "policy": ["The assistant never sends the customer's payment details to the courier."],
            "subgoals": [
                "The order's delivery address is changed to the new address.",
                "The customer is told that the address was changed.",
            ],
            "interaction": [
                "The assistant asks the customer for the order number.",
                "The assistant asks the customer for the new address.",
            ],
            "attempts": [{"solved": s, "violated": False} for s in solved],
            "keep": keep,
            "reason": "An attempt changed the address within the policy."
            if keep
            else "The task is not worth keeping.",
        }

    def _agent(self, messages: list[dict[str, Any]]) -> Reply:
        said = " ".join(str(m.get("content") or "") for m in messages if m.get("role") == "user")
        asked = any(
            m.get("role") == "assistant" and "?" in str(m.get("content") or "") for m in messages
        )
        if self.agent_asks and not asked:
            return Reply(content=ASK)
        done = sum(1 for m in messages if m.get("role") == "tool")
        if done >= len(WORKFLOW_TOOLS):
            return Reply(content=FINAL)
        order = _ORDER_SAID.search(said + " ")
        address = _ADDRESS_SAID.search(said)
        number = order.group(1) if order else "unknown"
        arguments: dict[str, dict[str, Any]] = {
            "find_order": {"order_number": number},
            "update_address": {
                "order_number": number,
                "address": address.group(1) if address else "unknown",
            },
            "notify_courier": {"order_number": number, "note": "The delivery address changed."},
        }
        name = WORKFLOW_TOOLS[done]
        return Reply(tool_calls=[{"name": name, "arguments": arguments[name]}])


def _user(messages: list[dict[str, Any]], prompt: str) -> dict[str, Any]:
    if len(messages) > 2:  # a retry: the environment refused the leak, so hold the facts back
        if FINAL in str(messages[1]["content"]):
            return {"reply": "Thank you, that is all I needed.", "done": True}
        return {"reply": "Alright, please go ahead with what you can.", "done": False}
    order = re.search(r"order_number: (\S+?)(?:;|$)", prompt, re.MULTILINE)
    number = order.group(1) if order else "unknown"
    return {
        "reply": f"Sure, my order number is {number} and it should go to {NEW_ADDRESS}.",
        "done": False,
    }


def _judgement(checks: set[str], transcript: str) -> dict[str, Any]:
    asked = _ASKED_IN_TRANSCRIPT.search(transcript) is not None
    verdicts = {}
    for name in checks:
        passed = asked if name.startswith("rubric:interaction-") else True
        verdicts[name] = {"reason": "Checked against the transcript.", "passed": passed}
    return verdicts


def _topic(prompt: str, pattern: re.Pattern[str]) -> str:
    found = pattern.search(prompt)
    return found.group(1).lower() if found else "general"


def _request(prompt: str) -> str:
    """The request from the persona's own words: near-identical personas, near-identical requests."""
    found = _PERSONA.search(prompt)
    doing = found.group(1).rstrip(".").lower() if found else "shops online"
    return f"As someone who {doing}, I need my latest order sent somewhere else."


def _order_number(topic: str) -> str:
    return f"{topic[:3].upper()}-{sum(map(ord, topic)) % 9000 + 1000}"


def _json(value: Any) -> Reply:
    return Reply(content=json.dumps(value))
