"""The bot's conversation: which message becomes which intent, and what the user hears back.

Built by a factory because an aiogram Router can be attached to one dispatcher only: each
process (and each test) builds its own. Handlers only translate; the intents are built by
`producers.intents` like in every other producer, and published to JetStream.

A plain message is a new project unless a question is open: a reply to the bot's question
(the question names its project) or, failing that, the user's newest project waiting for an
answer makes it the answer. `/new` always starts a project; `/answer` names the project.
"""

from __future__ import annotations

import re
import uuid

import structlog
from aiogram import Bot, F, Router
from aiogram.filters import Command, CommandObject, CommandStart
from aiogram.types import BotCommand, ErrorEvent, Message

from infra.bus.publisher import Publisher
from infra.db.models import ProjectState
from producers.intents import clarification_answer, project_request
from producers.read_model import ProjectView
from producers.telegram_bot import replies
from producers.telegram_bot.ports import ProjectReadModel

log = structlog.get_logger(__name__)

_PROJECT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


def bot_commands() -> list[BotCommand]:
    """The command menu Telegram shows; set with `setMyCommands` at startup."""
    return [BotCommand(command=name, description=hint) for name, hint in replies.COMMANDS]


def user_id_of(message: Message) -> str:
    """`telegram:<id>` of the sender (the chat itself for anonymous senders)."""
    sender = message.from_user.id if message.from_user is not None else message.chat.id
    return f"telegram:{sender}"


def build_router(publisher: Publisher, read_model: ProjectReadModel) -> Router:
    """A fresh router publishing through `publisher` and answering from `read_model`."""
    router = Router(name="orchestrator")
    conversation = _Conversation(publisher, read_model)

    router.message.register(conversation.start, CommandStart())
    router.message.register(conversation.start, Command("help"))
    router.message.register(conversation.new, Command("new"))
    router.message.register(conversation.answer_command, Command("answer"))
    router.message.register(conversation.status, Command("status"))
    router.message.register(conversation.projects, Command("projects"))
    router.message.register(conversation.unknown_command, F.text.startswith("/"))
    router.message.register(conversation.text, F.text)
    router.message.register(conversation.not_text)
    router.errors.register(conversation.failed)
    return router


class _Conversation:
    def __init__(self, publisher: Publisher, read_model: ProjectReadModel) -> None:
        self._publisher = publisher
        self._read_model = read_model

    async def start(self, message: Message) -> None:
        await message.answer(replies.START)

    async def new(self, message: Message, command: CommandObject) -> None:
        description = (command.args or "").strip()
        if not description:
            await message.answer(replies.NEW_USAGE)
            return
        await self._new_project(message, description)

    async def answer_command(self, message: Message, command: CommandObject) -> None:
        ref, _, text = (command.args or "").strip().partition(" ")
        if not ref or not text.strip():
            await message.answer(replies.ANSWER_USAGE)
            return
        project = await self._read_model.project(user_id_of(message), ref)
        if project is None:
            await message.answer(replies.unknown_project(ref))
            return
        await self._answer(message, project, text.strip())

    async def status(self, message: Message, command: CommandObject) -> None:
        user_id = user_id_of(message)
        ref = (command.args or "").strip()
        if not ref:
            newest = await self._read_model.projects(user_id)
            if not newest:
                await message.answer(replies.NO_PROJECTS)
                return
            ref = str(newest[0].id)
        project = await self._read_model.project(user_id, ref)
        if project is None:
            await message.answer(replies.unknown_project(ref))
            return
        await message.answer(replies.status(project))

    async def projects(self, message: Message) -> None:
        projects = await self._read_model.projects(user_id_of(message))
        await message.answer(replies.project_list(projects))

    async def unknown_command(self, message: Message) -> None:
        command = (message.text or "").split(maxsplit=1)[0]
        await message.answer(replies.unknown_command(command))

    async def text(self, message: Message, bot: Bot) -> None:
        text = (message.text or "").strip()
        if not text:
            await message.answer(replies.NOT_TEXT)
            return
        if len(text) > replies.MAX_DESCRIPTION:
            await message.answer(replies.too_long(len(text)))
            return
        user_id = user_id_of(message)
        replied_to = _project_in_reply(message, bot.id)
        if replied_to is not None:
            project = await self._read_model.project(user_id, str(replied_to))
            if project is None:
                await message.answer(replies.unknown_project(str(replied_to)))
                return
            await self._answer(message, project, text)
            return
        waiting = await self._read_model.awaiting_answer(user_id)
        if waiting is not None:
            await self._answer(message, waiting, text)
            return
        await self._new_project(message, text)

    async def not_text(self, message: Message) -> None:
        await message.answer(replies.NOT_TEXT)

    async def failed(self, event: ErrorEvent) -> None:
        # The user always hears back; the operator gets the exception in the log.
        log.error("bot.update_failed", error=repr(event.exception), exc_info=event.exception)
        if event.update.message is not None:
            await event.update.message.answer(replies.BUSY)

    async def _new_project(self, message: Message, description: str) -> None:
        if len(description) > replies.MAX_DESCRIPTION:
            await message.answer(replies.too_long(len(description)))
            return
        request = project_request(
            description, user_id=user_id_of(message), source="telegram", chat_id=message.chat.id
        )
        await self._publisher.publish(request)
        log.info("bot.project_requested", project_id=str(request.project_id))
        await message.answer(replies.accepted(request.project_id))

    async def _answer(self, message: Message, project: ProjectView, text: str) -> None:
        if project.state != ProjectState.AWAITING_ANSWER:
            await message.answer(replies.no_question(project))
            return
        if len(text) > replies.MAX_DESCRIPTION:
            await message.answer(replies.too_long(len(text)))
            return
        answer = clarification_answer(
            project.id, project.flow_id, text, user_id=user_id_of(message), source="telegram"
        )
        await self._publisher.publish(answer)
        log.info("bot.clarification_answered", project_id=str(project.id))
        await message.answer(replies.answered(project))


def _project_in_reply(message: Message, bot_id: int) -> uuid.UUID | None:
    """The project named in the bot message this one replies to (a question names its project)."""
    original = message.reply_to_message
    if original is None or original.from_user is None or original.from_user.id != bot_id:
        return None
    found = _PROJECT_ID.search(original.text or "")
    return uuid.UUID(found.group(0)) if found else None
