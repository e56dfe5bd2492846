"""Conversations, their participants, messages and read cursors: /api/conversations/*."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from litestar import Controller, Response, delete, get, patch, post, put
from litestar.datastructures import State
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from app.deps import AUTHENTICATED, ServicesDep, UserDep, is_admin
from app.schemas import (
    ConversationCreate,
    ConversationRead,
    ConversationUpdate,
    MessageCreate,
    ParticipantList,
    ParticipantsAdd,
    PresenceRead,
    ReadCursorBody,
    ReadCursorRead,
)
from app.ws.node import Node
from domain import commands, handlers
from domain.errors import InvalidInput, NotAParticipant, NotFound
from domain.values import AssistantSettings, MemberRole, Message
from infrastructure.bootstrap import Services
from infrastructure.db import views
from infrastructure.read_cursor import apply_read_cursor

Limit = Annotated[int, QueryParameter(ge=1, le=200, description="page size")]
SeqParam = Annotated[int | None, QueryParameter(ge=0, le=2**62)]
Cursor = Annotated[
    str | None,
    QueryParameter(description="the next_cursor of the previous page, as returned (opaque; anything else is 400)"),
]


async def require_member(services: Services, conversation_id: UUID, user_id: UUID) -> MemberRole:
    """404 when the conversation does not exist, 403 when the caller is not in it."""
    found = await views.membership(services.pg, conversation_id, user_id)
    if not found.exists:
        raise NotFound("conversation not found")
    if found.role is None:
        raise NotAParticipant()
    return found.role


async def _read(services: Services, conversation_id: UUID, user_id: UUID) -> ConversationRead:
    async with services.uow() as uow:
        conv = await uow.conversations.get(conversation_id, viewer_id=user_id)
    if conv is None:
        raise NotFound("conversation not found")
    conv.require_member()
    return ConversationRead(
        id=conv.id,
        title=conv.title,
        owner_id=conv.owner_id,
        last_seq=conv.last_seq,
        assistant=conv.assistant,
        created_at=conv.created_at,
        updated_at=conv.updated_at,
        role=conv.viewer_role,
        participants=await views.participants_of(services.engine, conv.id, user_id),
    )


async def _ids_for_emails(services: Services, emails: list[str]) -> list[UUID]:
    """Accounts for these addresses; an address with no account is a VALIDATION error naming it."""
    found = await views.user_ids_by_email(services.engine, emails)
    unknown = sorted({e.strip().lower() for e in emails} - found.keys())
    if unknown:
        raise InvalidInput(f"no account for {', '.join(unknown)}")
    return list(found.values())


class ConversationController(Controller):
    path = "/api/conversations"
    tags = ["conversations"]
    dependencies = AUTHENTICATED

    @get("/", operation_id="ListConversations")
    async def list_conversations(
        self, services: ServicesDep, user: UserDep, limit: Limit = 50, cursor: Cursor = None
    ) -> views.Page[views.ConversationSummary]:
        return await views.list_conversations(services.pg, user.id, limit=limit, cursor=cursor)

    @post("/", status_code=HTTP_201_CREATED, operation_id="CreateConversation")
    async def create_conversation(
        self, data: JSONBody[ConversationCreate], services: ServicesDep, user: UserDep
    ) -> ConversationRead:
        cmd = commands.StartConversation(
            owner_id=user.id,
            title=data.title,
            participant_ids=data.participant_ids,
            assistant=data.assistant.to_settings() if data.assistant else AssistantSettings(),
        )
        conv = await handlers.start_conversation(cmd, services.uow(), services.clock, services.settings.limits)
        return await _read(services, conv.id, user.id)

    @get("/{conversation_id:uuid}", operation_id="GetConversation")
    async def get_conversation(
        self, conversation_id: FromPath[UUID], services: ServicesDep, user: UserDep
    ) -> ConversationRead:
        return await _read(services, conversation_id, user.id)

    @patch("/{conversation_id:uuid}", operation_id="UpdateConversation")
    async def update_conversation(
        self, conversation_id: FromPath[UUID], data: JSONBody[ConversationUpdate], services: ServicesDep, user: UserDep
    ) -> ConversationRead:
        cmd = commands.UpdateConversation(
            conversation_id=conversation_id,
            actor_id=user.id,
            title=data.title,
            assistant=data.assistant.to_settings() if data.assistant else None,
        )
        await handlers.update_conversation(cmd, services.uow(), services.clock, services.settings.limits)
        return await _read(services, conversation_id, user.id)

    @delete("/{conversation_id:uuid}", status_code=HTTP_204_NO_CONTENT, operation_id="DeleteConversation")
    async def delete_conversation(self, conversation_id: FromPath[UUID], services: ServicesDep, user: UserDep) -> None:
        cmd = commands.DeleteConversation(
            conversation_id=conversation_id, actor_id=user.id, actor_is_admin=await is_admin(services, user)
        )
        await handlers.delete_conversation(cmd, services.uow(), services.clock)

    # -- participants ----------------------------------------------------------------------------

    @get("/{conversation_id:uuid}/participants", operation_id="ListParticipants")
    async def list_participants(
        self, conversation_id: FromPath[UUID], services: ServicesDep, user: UserDep
    ) -> ParticipantList:
        await require_member(services, conversation_id, user.id)
        return ParticipantList(items=await views.participants_of(services.engine, conversation_id, user.id))

    @post("/{conversation_id:uuid}/participants", status_code=HTTP_201_CREATED, operation_id="AddParticipants")
    async def add_participants(
        self, conversation_id: FromPath[UUID], data: JSONBody[ParticipantsAdd], services: ServicesDep, user: UserDep
    ) -> ParticipantList:
        if data.emails:  # members only may learn which addresses have accounts
            await require_member(services, conversation_id, user.id)
        by_email = await _ids_for_emails(services, data.emails)
        cmd = commands.AddParticipants(
            conversation_id=conversation_id, actor_id=user.id, user_ids=data.all_ids() + by_email
        )
        await handlers.add_participants(cmd, services.uow(), services.clock, services.settings.limits)
        return ParticipantList(items=await views.participants_of(services.engine, conversation_id, user.id))

    @delete(
        "/{conversation_id:uuid}/participants/{user_id:uuid}",
        status_code=HTTP_204_NO_CONTENT,
        operation_id="RemoveParticipant",
    )
    async def remove_participant(
        self, conversation_id: FromPath[UUID], user_id: FromPath[UUID], services: ServicesDep, user: UserDep
    ) -> None:
        cmd = commands.RemoveParticipant(
            conversation_id=conversation_id,
            actor_id=user.id,
            user_id=user_id,
            actor_is_admin=user_id != user.id and await is_admin(services, user),
        )
        await handlers.remove_participant(cmd, services.uow(), services.clock)

    @get("/{conversation_id:uuid}/presence", operation_id="GetPresence")
    async def presence(
        self, conversation_id: FromPath[UUID], services: ServicesDep, user: UserDep, state: State
    ) -> PresenceRead:
        """Who of the members is online now; changes after this come as WebSocket ``presence`` frames."""
        await require_member(services, conversation_id, user.id)
        node: Node = state.node
        members = [p.user_id for p in await views.participants_of(services.engine, conversation_id, user.id)]
        return PresenceRead(online=sorted(await node.presence.online(members), key=str))

    # -- messages and read cursors ---------------------------------------------------------------

    @post(
        "/{conversation_id:uuid}/messages",
        operation_id="PostMessage",
        opt={"errors": [429]},
        responses={HTTP_200_OK: ResponseSpec(Message, description="This client_msg_id was used before: the original")},
    )
    async def post_message(
        self, conversation_id: FromPath[UUID], data: JSONBody[MessageCreate], services: ServicesDep, user: UserDep
    ) -> Response[Message]:
        """201 with the new message; 200 with the original when this ``client_msg_id`` was already used."""
        await services.send_limiter.check(user.id)
        cmd = commands.PostMessage(
            conversation_id=conversation_id, sender_id=user.id, client_msg_id=data.client_msg_id, text=data.text
        )
        result = await services.posts.post(cmd)  # group commit: answered once the message is durable
        return Response(result.message, status_code=HTTP_200_OK if result.duplicate else HTTP_201_CREATED)

    @get("/{conversation_id:uuid}/messages", operation_id="ListMessages")
    async def list_messages(
        self,
        conversation_id: FromPath[UUID],
        services: ServicesDep,
        user: UserDep,
        after_seq: SeqParam = None,
        before_seq: SeqParam = None,
        limit: Limit = 50,
    ) -> views.Page[Message]:
        await require_member(services, conversation_id, user.id)
        return await views.message_page(
            services.engine, conversation_id, user.id, after_seq=after_seq, before_seq=before_seq, limit=limit
        )

    @put("/{conversation_id:uuid}/read", operation_id="MarkRead")
    async def mark_read(
        self, conversation_id: FromPath[UUID], data: JSONBody[ReadCursorBody], services: ServicesDep, user: UserDep
    ) -> ReadCursorRead:
        cmd = commands.MarkRead(conversation_id=conversation_id, user_id=user.id, seq=data.seq)
        seq = await handlers.mark_read(cmd, services.uow(), services.clock)
        unread = await apply_read_cursor(services, conversation_id, user.id)
        return ReadCursorRead(conversation_id=conversation_id, seq=seq, unread_count=unread)
