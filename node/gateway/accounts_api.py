"""Sign-up and sign-in of gateway users: password registration, login, and OAuth sign-up (with proof).

Registration is open by default (the SDK's flow: sign up, get an API key). An operator who
closes it (`gateway.open_registration: false`) keeps outsiders from making orgs on the node:
registering is then 403 unless the body carries `invite_token`, a pending invite sent to that
very email (the invitee then accepts it as usual), and OAuth signs existing accounts in."""

from __future__ import annotations

from aiohttp import web
from pydantic import Field

from node.errors import Forbidden, Unauthenticated
from node.gateway.models import EMAIL, Body, read_body
from node.gateway.oauth import OAuthVerifier
from node.gateway.passwords import PasswordHasher
from node.gateway.paths import PREFIX
from node.gateway.store import GatewayStore
from node.server.http import json_response
from node.server.openapi import body


class RegisterRequest(Body):
    email: str = Field(pattern=EMAIL, max_length=320)
    password: str = Field(min_length=8, max_length=256)
    name: str = Field(min_length=1, max_length=200)
    org_name: str = Field(min_length=1, max_length=200)
    # With registration closed: a pending invite to this email lets its recipient sign up.
    invite_token: str | None = Field(None, min_length=1, max_length=200)


class OAuthRegisterRequest(Body):
    provider: str = Field(min_length=1, max_length=50)
    subject: str = Field(min_length=1, max_length=200)
    email: str = Field(pattern=EMAIL, max_length=320)
    name: str = Field(min_length=1, max_length=200)
    org_name: str | None = Field(None, max_length=200)
    # OpenID Connect id_token proving (provider, subject, email); see node/gateway/oauth.py.
    id_token: str | None = Field(None, min_length=1, max_length=16384)
    invite_token: str | None = Field(None, min_length=1, max_length=200)


class LoginRequest(Body):
    email: str
    password: str


class AccountsApi:
    def __init__(self, store: GatewayStore, oauth: OAuthVerifier, hasher: PasswordHasher,
                 open_registration: bool = True) -> None:
        self.store = store
        self.oauth = oauth
        self.hasher = hasher
        self.open_registration = open_registration

    async def _registering(self, email: str, invite_token: str | None) -> None:
        if self.open_registration:
            return
        invite = await self.store.invite_by_token(invite_token) if invite_token else None
        if invite is None or invite["status"] != "pending" or invite["email"] != email.lower():
            raise Forbidden("Registration is closed on this node; sign up with an invite sent to your email"
                            " (invite_token), or ask its operator for an account")

    def routes(self) -> list[web.RouteDef]:
        p = PREFIX
        return [
            web.post(f"{p}/auth/register", self.register),
            web.post(f"{p}/auth/login", self.login),
            web.post(f"{p}/auth/oauth/register", self.oauth_register),
        ]

    @body(RegisterRequest, read=read_body)
    async def register(self, request: web.Request, req: RegisterRequest) -> web.Response:
        await self._registering(req.email, req.invite_token)
        out = await self.store.register(req.email, req.name, req.org_name,
                                        password_hash=await self.hasher.hash(req.password))
        await self.store.audit(out["org_id"], f"user:{out['user_id']}", "account.registered", "user", out["user_id"])
        return json_response(out, 201)

    @body(OAuthRegisterRequest, read=read_body)
    async def oauth_register(self, request: web.Request, req: OAuthRegisterRequest) -> web.Response:
        proof = await self.oauth.prove(request, req.provider, req.subject, req.email, req.id_token)
        existing = await self.store.user_by_oauth(req.provider, req.subject)
        if existing is not None:
            token, expires = await self.store.new_session(existing["id"])
            return json_response({"user_id": existing["id"], "org_id": await self.store.first_org(existing["id"]),
                                  "token": token, "expires_at": expires, "created": False})
        await self._registering(req.email, req.invite_token)
        out = await self.store.register(req.email, req.name, req.org_name or f"{req.name}'s org",
                                        oauth=(req.provider, req.subject))
        token, expires = await self.store.new_session(out["user_id"])
        await self.store.audit(out["org_id"], f"user:{out['user_id']}", "account.registered", "user",
                               out["user_id"], after={"oauth": req.provider, "proof": proof})
        return json_response({**out, "token": token, "expires_at": expires, "created": True}, 201)

    @body(LoginRequest, read=read_body)
    async def login(self, request: web.Request, req: LoginRequest) -> web.Response:
        user = await self.store.user_by_email(req.email)
        # Unknown emails check a dummy hash: same time, same answer as a wrong password.
        verified = await self.hasher.verify(req.password, user["password_hash"] if user is not None else None)
        if not verified or user is None:
            raise Unauthenticated("Invalid email or password")
        token, expires = await self.store.new_session(user["id"])
        return json_response({"token": token, "expires_at": expires, "user_id": user["id"],
                              "org_id": await self.store.first_org(user["id"])})
