"""session.*: login, logout and the per-session queries."""
from __future__ import annotations

from ..dispatch import CallContext
from ..errors import ApiError
from . import behaviour


@behaviour("session.login_with_password")
def login_with_password(ctx: CallContext, uname: str, pwd: str, version: str,
                        originator: str) -> str:
    return ctx.sim.sessions.login(uname, pwd, originator, ctx.host_ref)


@behaviour("session.slave_local_login_with_password")
def slave_local_login_with_password(ctx: CallContext, uname: str, pwd: str) -> str:
    return ctx.sim.sessions.login(uname, pwd, "", ctx.host_ref, local=True)


@behaviour("session.logout")
def logout(ctx: CallContext) -> None:
    assert ctx.session is not None
    ctx.sim.sessions.logout(ctx.session)


@behaviour("session.local_logout")
def local_logout(ctx: CallContext) -> None:
    assert ctx.session is not None
    ctx.sim.sessions.logout(ctx.session)


@behaviour("session.change_password")
def change_password(ctx: CallContext, old_pwd: str, new_pwd: str) -> None:
    assert ctx.session is not None
    user = ctx.db.get("session", ctx.session)["auth_user_name"]
    sessions = ctx.sim.sessions
    if sessions.users.get(user) != old_pwd:
        raise ApiError("SESSION_AUTHENTICATION_FAILED", user, "Authentication failure")
    sessions.users[user] = new_pwd


@behaviour("session.get_all_subject_identifiers")
def get_all_subject_identifiers(ctx: CallContext) -> list[str]:
    return [rec["auth_user_sid"] for rec in ctx.db.all("session").values()
            if rec["auth_user_sid"]]


@behaviour("session.logout_subject_identifier")
def logout_subject_identifier(ctx: CallContext, sid: str) -> None:
    for ref, rec in ctx.db.all("session").items():
        if rec["auth_user_sid"] == sid and ref != ctx.session:
            ctx.sim.sessions.destroy(ref)
