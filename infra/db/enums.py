"""The values `projects.state`, `servers.state`, `users.role` and `users.status` hold.

They live apart from the tables because light code reads them: the CLI's parser offers the roles
as choices, and `infra.project_operations` (which the parser reads for the operation names)
checks states. Importing `infra.db.models` would cost every `orchestrator --help` the ORM.
"""

from __future__ import annotations

from enum import StrEnum


class ProjectState(StrEnum):
    """The lifecycle the coordinator moves a project through."""

    REQUESTED = "requested"
    SPECIFYING = "specifying"
    AWAITING_ANSWER = "awaiting_answer"
    SPECIFIED = "specified"
    PROVISIONING = "provisioning"
    BUILDING = "building"
    DEPLOYING = "deploying"
    ACTIVE = "active"
    FAILED = "failed"
    ARCHIVED = "archived"
    #: The deploy needs secrets Vault does not hold; it resumes when the last one is stored.
    AWAITING_SECRETS = "awaiting_secrets"


class ServerState(StrEnum):
    """A deploy target's lifecycle; the allowed moves are in `infra.server_lifecycle`."""

    NEW = "new"
    PROVISIONING = "provisioning"
    READY = "ready"
    UNREACHABLE = "unreachable"
    DRAINING = "draining"
    RETIRED = "retired"


class UserRole(StrEnum):
    """What a person may do: members act on their own projects, admins on everything."""

    ADMIN = "admin"
    MEMBER = "member"


class UserStatus(StrEnum):
    ACTIVE = "active"
    BLOCKED = "blocked"
