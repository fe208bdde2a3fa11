"""The bot's conversation: which message becomes which intent, and what the user hears back.

Built by a factory because an aiogram Router can be attached to one dispatcher only: each
process (and each test) builds its own. Handlers only translate; the intents are built by
`producers.intents` like in every other producer, and published to JetStream. Every handler
runs behind `gate.AccessGate`, which admits active users only and hands over the `person`.

A plain message is, in this order: the value of a secret the bot asked for (`/secret`), or an
answer when a question is open (a reply to the bot's question, which names its project, or else
the user's newest project waiting for an answer), or a new project. Descriptions and answers are
scanned for credentials first: one that carries a token is deleted and refused, and nothing of
it is published. `/new` always starts a project; `/answer` names the project.

Members see and act on their own projects; admins on everyone's, plus the admin commands.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

import structlog
from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramBadRequest, TelegramForbiddenError
from aiogram.filters import Command, CommandObject, CommandStart
from aiogram.types import (
    BotCommand,
    CallbackQuery,
    ErrorEvent,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
)

from infra.bus.publisher import Publisher
from infra.db.models import ProjectState, UserRole, UserStatus
from infra.project_operations import Operation, refusal
from infra.repo_urls import ForgeSettings
from infra.vault import VaultError
from producers.access import (
    AccessError,
    Directory,
    Person,
    normalise_user_id,
    project_scope,
    require_admin,
)
from producers.adoption import BadRepositoryUrl, adopt_request
from producers.credential_scan import find_credentials
from producers.intents import (
    change_request,
    clarification_answer,
    operation_request,
    project_request,
)
from producers.read_model import ProjectView
from producers.secret_intake import InvalidSecretName, check_secret_name, store_project_secret
from producers.telegram_bot import replies
from producers.telegram_bot.admin_views import AdminViews
from producers.telegram_bot.pending_secrets import AwaitedSecret, PendingSecrets
from producers.telegram_bot.ports import ProjectReadModel, ProjectSecrets

log = structlog.get_logger(__name__)

_PROJECT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
#: Inline button data `sec:<first 12 chars of the project id>:<NAME>` (Telegram allows 64 bytes).
_SECRET_BUTTON = "sec:"  # noqa: S105 -- a callback-data prefix, not a secret
_BUTTON_PROJECT_CHARS = 12
_MAX_CALLBACK_DATA = 64


@dataclass(frozen=True)
class BotServices:
    """Everything the conversation uses besides Telegram, built by the composition root."""

    publisher: Publisher
    read_model: ProjectReadModel
    directory: Directory
    pending: PendingSecrets
    secrets: ProjectSecrets
    admin: AdminViews
    invite_ttl: timedelta
    #: The git host a repository to adopt must be on (`/adopt`).
    forge: ForgeSettings = field(default_factory=ForgeSettings)


def bot_commands() -> list[BotCommand]:
    """The command menu Telegram shows; set with `setMyCommands` at startup."""
    return [BotCommand(command=name, description=hint) for name, hint in replies.COMMANDS]


def build_router(services: BotServices) -> Router:
    """A fresh router over `services`."""
    router = Router(name="orchestrator")
    conversation = _Conversation(services)
    admin = _AdminCommands(services)

    router.message.register(conversation.start, CommandStart())
    router.message.register(conversation.start, Command("help"))
    router.message.register(conversation.new, Command("new"))
    router.message.register(conversation.adopt, Command("adopt"))
    router.message.register(conversation.answer_command, Command("answer"))
    router.message.register(conversation.change_command, Command("change"))
    router.message.register(conversation.status, Command("status"))
    router.message.register(conversation.projects, Command("projects"))
    router.message.register(conversation.secret, Command("secret"))
    router.message.register(conversation.cancel, Command("cancel"))
    router.message.register(conversation.operation, Command(*(op.value for op in Operation)))
    router.message.register(admin.allow, Command("allow"))
    router.message.register(admin.block, Command("block"))
    router.message.register(admin.unblock, Command("unblock"))
    router.message.register(admin.invite, Command("invite"))
    router.message.register(admin.users, Command("users"))
    router.message.register(admin.servers, Command("servers"))
    router.message.register(admin.incidents, Command("incidents"))
    router.message.register(admin.dlq, Command("dlq"))
    router.message.register(admin.lag, Command("lag"))
    router.message.register(conversation.unknown_command, F.text.startswith("/"))
    router.message.register(conversation.text, F.text)
    router.message.register(conversation.not_text)
    router.callback_query.register(conversation.secret_button, F.data.startswith(_SECRET_BUTTON))
    router.errors.register(conversation.failed)
    return router


class _Conversation:
    def __init__(self, services: BotServices) -> None:
        self._s = services

    async def start(self, message: Message, person: Person) -> None:
        text = replies.START
        if person.is_admin:
            text += "\n\n" + replies.ADMIN_HELP
        await message.answer(text)

    async def new(self, message: Message, command: CommandObject, person: Person) -> None:
        description = (command.args or "").strip()
        if not description:
            await message.answer(replies.NEW_USAGE)
            return
        await self._new_project(message, person, description)

    async def adopt(self, message: Message, command: CommandObject, person: Person) -> None:
        """`/adopt <git url>`: the same checks as a new project, plus the URL's host."""
        url = (command.args or "").strip()
        if not url:
            await message.answer(replies.ADOPT_USAGE)
            return
        if await self._refused_for_credentials(message, url):
            return
        try:
            request = adopt_request(
                url, user_id=person.id, source="telegram", forge=self._s.forge,
                how_to_store="store it with /secret NAME", chat_id=message.chat.id,
            )
        except BadRepositoryUrl as exc:
            await message.answer(replies.adopt_refused(str(exc)))
            return
        await self._s.publisher.publish(request)
        log.info("bot.adopt_requested", project_id=str(request.project_id))
        await message.answer(replies.adopt_accepted(request.project_id, request.repository_url))

    async def answer_command(
        self, message: Message, command: CommandObject, person: Person
    ) -> None:
        ref, _, text = (command.args or "").strip().partition(" ")
        if not ref or not text.strip():
            await message.answer(replies.ANSWER_USAGE)
            return
        project = await self._s.read_model.project(project_scope(person), ref)
        if project is None:
            await message.answer(replies.unknown_project(ref))
            return
        await self._answer(message, person, project, text.strip())

    async def change_command(
        self, message: Message, command: CommandObject, person: Person
    ) -> None:
        ref, _, text = (command.args or "").strip().partition(" ")
        if not ref or not text.strip():
            await message.answer(replies.CHANGE_USAGE)
            return
        project = await self._s.read_model.project(project_scope(person), ref)
        if project is None:
            await message.answer(replies.unknown_project(ref))
            return
        await self._change(message, person, project, text.strip())

    async def status(self, message: Message, command: CommandObject, person: Person) -> None:
        scope = project_scope(person)
        ref = (command.args or "").strip()
        if not ref:
            newest = await self._s.read_model.projects(person.id)
            if not newest:
                await message.answer(replies.NO_PROJECTS)
                return
            ref = str(newest[0].id)
        project = await self._s.read_model.project(scope, ref)
        if project is None:
            await message.answer(replies.unknown_project(ref))
            return
        text = replies.status(project)
        missing = await self._missing_secrets(project)
        if not missing:
            await message.answer(text)
            return
        buttons = [
            [InlineKeyboardButton(text=f"Set {name}", callback_data=data)]
            for name in missing
            if len(data := _secret_button(project.id, name)) <= _MAX_CALLBACK_DATA
        ]
        await message.answer(
            text + "\n\n" + replies.missing_secrets(missing),
            reply_markup=InlineKeyboardMarkup(inline_keyboard=buttons) if buttons else None,
        )

    async def projects(self, message: Message, person: Person) -> None:
        if person.is_admin:
            await message.answer(replies.project_list_all(await self._s.read_model.projects(None)))
            return
        await message.answer(replies.project_list(await self._s.read_model.projects(person.id)))

    async def secret(self, message: Message, command: CommandObject, person: Person) -> None:
        name, _, ref = (command.args or "").strip().partition(" ")
        if not name:
            await message.answer(replies.VALUE_USAGE)
            return
        try:
            check_secret_name(name)
        except InvalidSecretName as exc:
            await message.answer(f"{exc}\n\n{replies.VALUE_USAGE}")
            return
        ref = ref.strip()
        if not ref:
            newest = await self._s.read_model.projects(person.id)
            if not newest:
                await message.answer(replies.NO_PROJECTS)
                return
            ref = str(newest[0].id)
        project = await self._s.read_model.project(project_scope(person), ref)
        if project is None:
            await message.answer(replies.unknown_project(ref))
            return
        await self._ask_secret(message, person, project, name)

    async def secret_button(self, query: CallbackQuery, person: Person) -> None:
        parts = (query.data or "").split(":", 2)
        prefix, name = (parts[1], parts[2]) if len(parts) == 3 else ("", "")
        project = await self._s.read_model.project(project_scope(person), prefix)
        if project is None or not isinstance(query.message, Message) or not _is_name(name):
            await query.answer(replies.unknown_project(prefix), show_alert=True)
            return
        await query.answer()
        await self._ask_secret(query.message, person, project, name)

    async def operation(self, message: Message, command: CommandObject, person: Person) -> None:
        """`/redeploy`, `/restart`, `/rollback` or `/retry <project>`: checked against the same
        rules as the coordinator's, so the user hears a refusal at once; else published."""
        operation = Operation(command.command.lower())
        ref = (command.args or "").strip()
        if not ref:
            await message.answer(replies.operation_usage(operation.value))
            return
        project = await self._s.read_model.project(project_scope(person), ref)
        if project is None:
            await message.answer(replies.unknown_project(ref))
            return
        reason = refusal(project, operation)
        if reason is not None:
            await message.answer(replies.operation_refused(reason))
            return
        intent = operation_request(operation, project.id, project.flow_id, user_id=person.id)
        await self._s.publisher.publish(intent)
        log.info(f"bot.{operation}_requested", project_id=str(project.id))
        await message.answer(replies.operation_requested(operation.value, project))

    async def cancel(self, message: Message, person: Person) -> None:
        awaited = await self._s.pending.take(person.id)
        await message.answer(replies.CANCELLED if awaited else replies.NOTHING_PENDING)

    async def unknown_command(self, message: Message) -> None:
        command = (message.text or "").split(maxsplit=1)[0]
        await message.answer(replies.unknown_command(command))

    async def text(self, message: Message, bot: Bot, person: Person) -> None:
        awaited = await self._s.pending.take(person.id)
        if awaited is not None:
            await self._store_secret(message, person, awaited)
            return
        text = (message.text or "").strip()
        if not text:
            await message.answer(replies.NOT_TEXT)
            return
        if len(text) > replies.MAX_DESCRIPTION:
            await message.answer(replies.too_long(len(text)))
            return
        replied_to = _project_in_reply(message, bot.id)
        if replied_to is not None:
            project = await self._s.read_model.project(project_scope(person), str(replied_to))
            if project is None:
                await message.answer(replies.unknown_project(str(replied_to)))
                return
            if await self._question_open(project):
                await self._answer(message, person, project, text)
            else:
                # A reply to a project's card that is not an answer asks for a change.
                await self._change(message, person, project, text)
            return
        waiting = await self._s.read_model.awaiting_answer(person.id)
        if waiting is not None:
            await self._answer(message, person, waiting, text)
            return
        await self._new_project(message, person, text)

    async def not_text(self, message: Message) -> None:
        await message.answer(replies.NOT_TEXT)

    async def failed(self, event: ErrorEvent) -> None:
        # The user always hears back; the operator gets the exception in the log.
        log.error("bot.update_failed", error=repr(event.exception), exc_info=event.exception)
        if event.update.message is not None:
            await event.update.message.answer(replies.BUSY)

    async def _new_project(self, message: Message, person: Person, description: str) -> None:
        if len(description) > replies.MAX_DESCRIPTION:
            await message.answer(replies.too_long(len(description)))
            return
        if await self._refused_for_credentials(message, description):
            return
        request = project_request(
            description, user_id=person.id, source="telegram", chat_id=message.chat.id
        )
        await self._s.publisher.publish(request)
        log.info("bot.project_requested", project_id=str(request.project_id))
        await message.answer(replies.accepted(request.project_id))

    async def _question_open(self, project: ProjectView) -> bool:
        if project.state == ProjectState.AWAITING_ANSWER:
            return True
        return await self._s.read_model.revision_question_open(project.id)

    async def _change(
        self, message: Message, person: Person, project: ProjectView, text: str
    ) -> None:
        if len(text) > replies.MAX_DESCRIPTION:
            await message.answer(replies.too_long(len(text)))
            return
        refusal = await self._s.read_model.change_refusal(project.id)
        if refusal is not None:
            await message.answer(replies.change_refused(project, refusal))
            return
        if await self._refused_for_credentials(message, text):
            return
        request = change_request(
            project.id, project.flow_id, text, user_id=person.id, source="telegram"
        )
        await self._s.publisher.publish(request)
        log.info("bot.change_requested", project_id=str(project.id))
        await message.answer(replies.change_accepted(project))

    async def _answer(
        self, message: Message, person: Person, project: ProjectView, text: str
    ) -> None:
        if not await self._question_open(project):
            await message.answer(replies.no_question(project))
            return
        if len(text) > replies.MAX_DESCRIPTION:
            await message.answer(replies.too_long(len(text)))
            return
        if await self._refused_for_credentials(message, text):
            return
        answer = clarification_answer(
            project.id, project.flow_id, text, user_id=person.id, source="telegram"
        )
        await self._s.publisher.publish(answer)
        log.info("bot.clarification_answered", project_id=str(project.id))
        await message.answer(replies.answered(project))

    async def _refused_for_credentials(self, message: Message, text: str) -> bool:
        """Delete and refuse a message carrying a credential; True if it was refused."""
        findings = find_credentials(text)
        if not findings:
            return False
        kinds = ", ".join(sorted({f.kind for f in findings}))
        log.warning("bot.credential_refused", kinds=kinds)
        deleted = await _delete(message)
        reply = replies.credential_refused(kinds)
        if not deleted:
            reply += " I could not delete your message: please delete it yourself."
        await message.answer(reply)
        return True

    async def _ask_secret(
        self, message: Message, person: Person, project: ProjectView, name: str
    ) -> None:
        await self._s.pending.ask(person.id, project.id, name)
        await message.answer(replies.ask_secret(name, project, self._s.pending.minutes))

    async def _store_secret(self, message: Message, person: Person, awaited: AwaitedSecret) -> None:
        # The value leaves the chat first, whatever happens to it next.
        deleted = await _delete(message)
        value = (message.text or "").strip()
        project = await self._s.read_model.project(project_scope(person), str(awaited.project_id))
        if project is None:
            await message.answer(replies.unknown_project(str(awaited.project_id)))
            return
        try:
            await store_project_secret(
                self._s.secrets,
                self._s.publisher,
                project_id=project.id,
                flow_id=project.flow_id,
                name=awaited.name,
                value=value,
                user_id=person.id,
            )
        except VaultError as exc:
            log.error("bot.secret_write_failed", name=awaited.name, error=str(exc))
            await message.answer(replies.STORE_FAILED)
            return
        log.info("bot.secret_stored", project_id=str(project.id), name=awaited.name)
        await message.answer(
            replies.secret_stored(awaited.name, project, project.id)
            if deleted
            else replies.secret_not_deleted(awaited.name)
        )

    async def _missing_secrets(self, project: ProjectView) -> list[str]:
        needed = await self._s.read_model.secret_names(project.id)
        if not needed:
            return []
        try:
            stored = set(await self._s.secrets.list_secrets(f"projects/{project.id}"))
        except VaultError as exc:
            log.warning("bot.secret_list_failed", project_id=str(project.id), error=str(exc))
            return []
        return [name for name in needed if name not in stored]


class _AdminCommands:
    """People and platform: admins only, every action checked by `producers.access`."""

    def __init__(self, services: BotServices) -> None:
        self._s = services

    async def allow(self, message: Message, command: CommandObject, person: Person) -> None:
        target, _, role_text = (command.args or "").strip().partition(" ")
        role = UserRole.ADMIN if role_text.strip().lower() == "admin" else UserRole.MEMBER
        if not target:
            await message.answer(replies.ALLOW_USAGE)
            return
        try:
            allowed = await self._s.directory.allow(person, normalise_user_id(target), role=role)
        except AccessError as exc:
            await message.answer(str(exc))
            return
        log.info("bot.user_allowed", user_id=allowed.id, role=allowed.role, by=person.id)
        await message.answer(replies.allowed(allowed.id, allowed.role))

    async def block(self, message: Message, command: CommandObject, person: Person) -> None:
        await self._set_status(message, command, person, UserStatus.BLOCKED)

    async def unblock(self, message: Message, command: CommandObject, person: Person) -> None:
        await self._set_status(message, command, person, UserStatus.ACTIVE)

    async def invite(
        self, message: Message, command: CommandObject, person: Person, bot: Bot
    ) -> None:
        role = (
            UserRole.ADMIN if (command.args or "").strip().lower() == "admin" else UserRole.MEMBER
        )
        try:
            code = await self._s.directory.create_invite(person, role=role, ttl=self._s.invite_ttl)
        except AccessError as exc:
            await message.answer(str(exc))
            return
        me = await bot.me()
        hours = int(self._s.invite_ttl.total_seconds() // 3600)
        log.info("bot.invite_created", by=person.id, role=role)
        await message.answer(replies.invite_link(me.username or "", code, hours, role))

    async def users(self, message: Message, person: Person) -> None:
        if await self._refused(message, person, "list users"):
            return
        await message.answer(AdminViews.users(await self._s.directory.people()))

    async def servers(self, message: Message, person: Person) -> None:
        if not await self._refused(message, person, "see servers"):
            await message.answer(await self._s.admin.servers())

    async def incidents(self, message: Message, person: Person) -> None:
        if not await self._refused(message, person, "see incidents"):
            await message.answer(await self._s.admin.incidents())

    async def dlq(self, message: Message, person: Person) -> None:
        if not await self._refused(message, person, "see dead letters"):
            await message.answer(await self._s.admin.dead_letters())

    async def lag(self, message: Message, person: Person) -> None:
        if not await self._refused(message, person, "see consumer lag"):
            await message.answer(await self._s.admin.lag())

    async def _set_status(
        self, message: Message, command: CommandObject, person: Person, status: UserStatus
    ) -> None:
        target = (command.args or "").strip()
        if not target:
            await message.answer(replies.STATUS_USAGE)
            return
        try:
            changed = await self._s.directory.set_status(person, normalise_user_id(target), status)
        except AccessError as exc:
            await message.answer(str(exc))
            return
        log.info("bot.user_status", user_id=changed.id, status=status, by=person.id)
        await message.answer(replies.status_changed(changed.id, changed.status))

    @staticmethod
    async def _refused(message: Message, person: Person, action: str) -> bool:
        try:
            require_admin(person, action)
        except AccessError as exc:
            await message.answer(str(exc))
            return True
        return False


def _is_name(name: str) -> bool:
    try:
        check_secret_name(name)
    except InvalidSecretName:
        return False
    return True


def _secret_button(project_id: uuid.UUID, name: str) -> str:
    return f"{_SECRET_BUTTON}{str(project_id)[:_BUTTON_PROJECT_CHARS]}:{name}"


async def _delete(message: Message) -> bool:
    """Delete a user's message (a pasted value); False if Telegram refused."""
    with contextlib.suppress(TelegramBadRequest, TelegramForbiddenError):
        await message.delete()
        return True
    return False


def _project_in_reply(message: Message, bot_id: int) -> uuid.UUID | None:
    """The project named in the bot message this one replies to (a question names its project)."""
    original = message.reply_to_message
    if original is None or original.from_user is None or original.from_user.id != bot_id:
        return None
    found = _PROJECT_ID.search(original.text or "")
    return uuid.UUID(found.group(0)) if found else None
