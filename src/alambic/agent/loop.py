"""One customer turn of the support agent:

1. a customer who asks for a person is handed off at once;
2. the router picks a tool the message calls for, if any; the model fills its arguments under a grammar made
   from the tool's schema, where a value with a pattern can only be one the customer wrote; the call runs;
3. retrieval finds the passages; if none is close enough in meaning (a calibrated similarity), and no tool
   answered, the turn is handed off, or cascaded to the teacher;
4. the model answers from the passages, the tool results and the conversation so far (an answer cut short by
   agent.max_tokens ends at its last full sentence); an answer is handed off, or cascaded, instead when its mean
   token log-prob is below the calibrated threshold, when it states a figure nothing it read gives
   (agent.check_figures), when it tells nothing of what the tool returned (agent.check_tool_use), when it is not
   in the customer's language (agent.check_language), or, for a first question no tool answered, when it is
   further in meaning from the question than the calibrated floor (agent.min_relevance) or when less of what it
   adds to the question is in the passages than the calibrated floor (agent.min_support): a weak student's
   greeting, request to repeat the question or answer from elsewhere is no answer; where a tool returned and
   has a reply template, that template says what it returned instead;
5. both turns are stored in the session's memory.

Documents never reach the tool step: an instruction planted in a document cannot make the agent call a tool.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from alambic.agent.grounding import relevance, support, unsupported_figures, uses_results
from alambic.agent.memory import Memory
from alambic.agent.prompting import RETRIEVED, agent_messages
from alambic.agent.retrieval import Passage, Retriever
from alambic.agent.router import NO_TOOL, ToolRouter, asks_for_person
from alambic.agent.tools import FREE_TEXT_CHARS, Toolbox, ToolResult
from alambic.config import AgentSection
from alambic.errors import AlambicError
from alambic.language import language_of, same_language
from alambic.models import ChatModel, Completion, Sampling
from alambic.prompts import Prompts
from alambic.store import Item, Ledger
from alambic.text import whole_sentences

CALIBRATION_FORMAT = 3
TICKET_REFERENCE = {"en": " Your reference is {ticket}.", "ar": " رقم طلبك المرجعي هو {ticket}."}


class AgentCalibration(BaseModel):
    """What the agent was calibrated to at release."""

    format: int = CALIBRATION_FORMAT
    min_similarity: float | None  # hand off below this; None: never on similarity
    min_logprob: float | None  # hand off below this mean token log-prob; None: never on confidence
    calibrated_on: int  # answerable training questions
    handoff_fpr: float
    tool_examples: dict[str, int]  # example requests per tool that passed the APIGen check
    dropped_examples: list[str] = []  # example requests whose call did not parse or execute, with why
    made_up_figures: int | None = None  # of the calibration answers, those stating a figure nothing they read gave
    min_relevance: float | None = None  # hand off a first answer below this cosine with its question; None: never
    off_language: int | None = None  # of the calibration answers, those not in their question's language
    irrelevant: int | None = None  # of the calibration answers, those below min_relevance
    min_support: float | None = None  # hand off a first answer less supported by its passages; None: never
    unsupported: int | None = None  # of the calibration answers, those below min_support


@dataclass
class AgentReply:
    text: str
    session: str
    passages: list[Passage] = field(default_factory=list)
    tool_calls: list[ToolResult] = field(default_factory=list)
    handoff: str | None = None  # why the turn went to a person
    ticket: str | None = None
    cascaded: bool = False
    replaced: str | None = None  # why the model's answer gave way to the tool's reply template
    logprob: float | None = None
    similarity: float | None = None
    remembered: int = 0  # earlier messages of the session the model was given
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def details(self) -> dict[str, Any]:
        return {
            "session": self.session,
            "passages": [{"citation": p.citation, "text": p.text} for p in self.passages],
            "tool_calls": [call.as_dict() for call in self.tool_calls],
            "handoff": self.handoff,
            "ticket": self.ticket,
            "cascaded": self.cascaded,
            "replaced": self.replaced,
            "logprob": None if self.logprob is None else round(self.logprob, 4),
            "similarity": None if self.similarity is None else round(self.similarity, 4),
            "remembered": self.remembered,
        }


def remembered_question(question: str, calls: list[ToolResult]) -> str:
    """The customer's turn as later turns see it: with what the tools returned, so a follow-up can use it."""
    found = [f"{c.tool}: {json.dumps(c.result, ensure_ascii=False)}" for c in calls if c.ok and c.result is not None]
    return question + "".join(f"\n({line})" for line in found)


def mean_logprob(completion: Completion) -> float | None:
    if completion.mean_logprob is not None:
        return completion.mean_logprob
    values = [entry["logprob"] for entry in completion.logprobs or [] if entry.get("logprob") is not None]
    finite = [value for value in values if math.isfinite(value)]
    return sum(finite) / len(finite) if finite else None


@dataclass
class AgentParts:
    model: ChatModel
    retriever: Retriever
    toolbox: Toolbox
    router: ToolRouter
    memory: Memory
    calibration: AgentCalibration
    prompts: Prompts
    system_prompt: str
    business: str
    person_phrases: list[str]
    teacher: ChatModel | None = None
    ledger: Ledger | None = None


class Agent:
    def __init__(self, parts: AgentParts, settings: AgentSection) -> None:
        self.parts, self.settings = parts, settings
        if settings.cascade and parts.teacher is None:
            raise AlambicError("agent.cascade needs a teacher to cascade to")

    @property
    def min_similarity(self) -> float | None:
        configured = self.settings.min_similarity
        return configured if configured is not None else self.parts.calibration.min_similarity

    @property
    def min_logprob(self) -> float | None:
        configured = self.settings.min_logprob
        return configured if configured is not None else self.parts.calibration.min_logprob

    @property
    def min_relevance(self) -> float | None:
        configured = self.settings.min_relevance
        return configured if configured is not None else self.parts.calibration.min_relevance

    @property
    def min_support(self) -> float | None:
        configured = self.settings.min_support
        return configured if configured is not None else self.parts.calibration.min_support

    async def answer(self, question: str, session: str | None = None, owner: str = "") -> AgentReply:
        """The answer to the customer's turn. Sessions are remembered per `owner` (the server's API key): another
        owner naming the same session id reads nothing of it."""
        session = session or uuid.uuid4().hex
        memory, remembered_as = self.parts.memory, f"{owner}/{session}" if owner else session
        history = memory.history(remembered_as, self.settings.memory_turns, self.settings.memory_chars)
        reply = await self._answer(question, session, history)
        reply.remembered = len(history)
        memory.add(remembered_as, "user", remembered_question(question, reply.tool_calls))
        memory.add(remembered_as, "assistant", reply.text, reply.details())
        return reply

    async def _answer(self, question: str, session: str, history: list[Any]) -> AgentReply:
        if asks_for_person(question, self.parts.person_phrases):
            return self._handoff(AgentReply("", session), question, "asked for a person")
        customer_words = "\n".join([m["content"] for m in history if m["role"] == "user"] + [question])
        calls = [call for call in [await self._tool_call(question, customer_words, session)] if call is not None]
        if any(not call.ok for call in calls):
            return self._handoff(AgentReply("", session, tool_calls=calls), question, "a tool failed")
        retrieval = self.parts.retriever.retrieve(question, RETRIEVED)
        reply = AgentReply("", session, retrieval.passages, calls, similarity=retrieval.similarity)
        messages = agent_messages(
            self.parts.prompts,
            self.parts.system_prompt,
            question,
            retrieval.passages,
            history,
            [call.as_dict() for call in calls],
        )
        floor = self.min_similarity
        if not calls and floor is not None and retrieval.similarity < floor:
            return await self._unsure(reply, question, messages, "nothing in the documents answers it")
        completion = await self.parts.model.achat(
            messages, Sampling(max_tokens=self.settings.max_tokens, confidence=True)
        )
        reply.text, reply.logprob = completion.text.strip(), mean_logprob(completion)
        if completion.finish_reason == "length":  # cut by max_tokens: no half sentence reaches the customer
            reply.text = whole_sentences(reply.text)
        reply.prompt_tokens, reply.completion_tokens = completion.prompt_tokens, completion.completion_tokens
        threshold = self.min_logprob
        if not reply.text or (threshold is not None and reply.logprob is not None and reply.logprob < threshold):
            return await self._unsure(reply, question, messages, "the model is unsure of its answer")
        if self.settings.check_figures and unsupported_figures(reply.text, [m["content"] for m in messages]):
            return await self._unsure(reply, question, messages, "the answer states a figure nothing it read gives")
        returned = [call.result for call in calls if call.ok]
        if self.settings.check_tool_use and returned and not uses_results(reply.text, question, returned):
            return await self._unsure(reply, question, messages, "the answer tells nothing the tool returned")
        if self.settings.check_language and same_language(question, reply.text) is False:
            return await self._unsure(reply, question, messages, "the answer is not in the customer's language")
        if not calls and not history and self._off_the_question(question, reply.text):
            return await self._unsure(reply, question, messages, "the answer does not take up the question")
        if not calls and not history and self._off_the_passages(question, reply.text, retrieval.passages):
            return await self._unsure(reply, question, messages, "the documents do not say what the answer adds")
        return reply

    def _off_the_question(self, question: str, answer: str) -> bool:
        floor = self.min_relevance
        return floor is not None and relevance(self.parts.retriever.embedder, [question], [answer])[0] < floor

    def _off_the_passages(self, question: str, answer: str, passages: list[Passage]) -> bool:
        floor, retriever = self.min_support, self.parts.retriever
        return floor is not None and support(answer, question, [p.text for p in passages], retriever.rarity) < floor

    async def _tool_call(self, question: str, customer_words: str, session: str) -> ToolResult | None:
        planned = await self.plan_tool_call(question, customer_words)
        if planned is None:
            return None
        name, arguments = planned
        if isinstance(arguments, dict):
            arguments |= self._agent_filled(name, question, session)
        return self.parts.toolbox.call(name, arguments)

    async def plan_tool_call(self, question: str, customer_words: str) -> tuple[str, Any] | None:
        """The tool the message calls for and the model's arguments for it (not yet run), or None."""
        toolbox = self.parts.toolbox
        grounded = {name: toolbox.grounded_values(name, customer_words) for name in toolbox.tools}
        allowed = {name for name, values in grounded.items() if values is not None}
        chosen = self.parts.router.choose(question, allowed)
        if chosen == NO_TOOL:
            return None
        return chosen, await self._arguments(chosen, question, grounded[chosen] or {})

    def _agent_filled(self, tool: str, question: str, session: str) -> dict[str, str]:
        properties = self.parts.toolbox.tools[tool].parameters.get("properties", {})
        filled = {"summary": question[:FREE_TEXT_CHARS], "session": session}
        return {name: value for name, value in filled.items() if name in properties}

    async def _arguments(self, name: str, question: str, grounded: dict[str, list[str]]) -> Any:
        """The model's arguments for the tool, under a grammar from its schema; what it wrote if that is not
        JSON (the toolbox then refuses it)."""
        toolbox = self.parts.toolbox
        schema = toolbox.arguments_schema(name, grounded)
        if not schema["properties"]:
            return {}
        tool = toolbox.tools[name]
        messages = self.parts.prompts.messages(
            "agent-tool",
            business=self.parts.business,
            tool=name,
            description=tool.description,
            schema=schema,
            question=question,
        )
        completion = await self.parts.model.achat(messages, Sampling(max_tokens=200, json_schema=schema))
        try:
            return json.loads(completion.text)
        except ValueError:
            return completion.text

    async def _unsure(self, reply: AgentReply, question: str, messages: list[Any], reason: str) -> AgentReply:
        said = [text for call in reply.tool_calls if (text := self.parts.toolbox.reply(call, language_of(question)))]
        if said:  # what a tool returned, in the business's words: exact, and free
            reply.text, reply.replaced = " ".join(said), reason
            return reply
        teacher = self.parts.teacher
        if not self.settings.cascade or teacher is None:
            return self._handoff(reply, question, reason)
        completion = await teacher.achat(messages, Sampling(max_tokens=self.settings.max_tokens))
        reply.text, reply.cascaded = completion.text.strip(), True
        reply.prompt_tokens, reply.completion_tokens = completion.prompt_tokens, completion.completion_tokens
        if self.parts.ledger is not None:
            self.parts.ledger.put_item(
                Item(
                    f"cascade-{uuid.uuid4().hex}",
                    "serve",
                    "serve",
                    "cascade",
                    "ok",
                    {
                        "candidate": True,  # for the next distillation round, once reviewed
                        "messages": [*messages, {"role": "assistant", "content": reply.text}],
                        "question": question,
                        "reason": reason,
                        "passages": [passage.key for passage in reply.passages],
                        "teacher_tokens": completion.prompt_tokens + completion.completion_tokens,
                    },
                )
            )
        return reply

    def _handoff(self, reply: AgentReply, question: str, reason: str) -> AgentReply:
        tool = self.settings.handoff_tool
        ticket = next((earlier for call in reply.tool_calls if call.tool == tool and (earlier := _ticket(call))), None)
        if tool is not None and ticket is None:  # a ticket the turn already opened is the hand-off's
            opened = self.parts.toolbox.call(tool, self._agent_filled(tool, question, reply.session))
            reply.tool_calls.append(opened)
            ticket = _ticket(opened)
        self.parts.memory.record_handoff(reply.session, reason, question, ticket)
        reply.handoff, reply.ticket = reason, ticket
        reply.text = self._handoff_message(question, ticket)
        return reply

    def _handoff_message(self, question: str, ticket: str | None) -> str:
        language = language_of(question)
        message = self.settings.handoff_messages.get(language or "", self.settings.handoff_message)
        reference = TICKET_REFERENCE.get(language or "", TICKET_REFERENCE["en"])
        return message.format(ticket=reference.format(ticket=ticket) if ticket else "")


def _ticket(call: ToolResult) -> str | None:
    """The id of the ticket a successful call opened, if it opened one."""
    if call.ok and isinstance(call.result, dict) and call.result.get("id") is not None:
        return str(call.result["id"])
    return None
