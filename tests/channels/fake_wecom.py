"""A fake WeCom server API (`/cgi-bin/...`) on tests/fakeserver.FakeProvider: real HTTP, the real
request shapes checked, and real success and error bodies.

    fake = FakeWecom(provider)               # or the `fake_wecom` fixture (tests/channels/conftest.py)
    fake.befriend("zhangsan", "wmEXT1")      # staff member zhangsan has customer wmEXT1
    ... adapter calls ...
    fake.calls("externalcontact/add_msg_template")[0].json
    fake.fail("externalcontact/add_msg_template", 45009)   # the next call answers 45009
    fake.expire_tokens()                     # every token issued so far answers 42001
    fake.add_staff("lisi")                   # lisi is in the app's visible range (message/send)
    fake.inbox("lisi")                       # the application messages lisi received

Two secrets are accepted by gettoken: `secret` (客户联系, WECOM_SECRET) and `agent_secret` (the self-built app
`agent_id`, WECOM_AGENT_SECRET); each token remembers its secret, and `message/send` takes only the app's.

Every endpoint is a function in `fake.handlers` (path below /cgi-bin/ → fn(request) → body dict);
`fake.handler(path)` adds or replaces one (the access token is checked before it is called).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.fakeserver import FakeProvider, Request

Body = dict[str, Any]
WecomHandler = Callable[[Request], Body]

ERRMSG = {
    40001: "invalid credential",
    40013: "invalid corpid",
    40014: "invalid access_token",
    40058: "invalid Request Parameter",
    40068: "invalid tagid",
    40071: "UserTag Name Already Exist",
    40008: "invalid message type",
    40056: "invalid agentid",
    40096: "invalid external userid",
    41001: "access_token missing",
    41051: "externaluser has started chatting",
    42001: "access_token expired",
    44004: "empty content",
    45009: "api freq out of limit",
    60111: "invalid string value `userid`. userid not found",
    81013: "user & party & tag all invalid",
    82001: "All touser & toparty & totag invalid",
    84061: "not external contact",
    301002: "not allow operate another agent with this accesstoken",
    -1: "system busy",
}


def error(errcode: int, detail: str = "") -> Body:
    """A WeCom error body as the real API words it (hint and help link included)."""
    msg = ERRMSG.get(errcode, "error")
    if detail:
        msg = f"{msg}, {detail}"
    hint = uuid.uuid4().hex[:20]
    return {
        "errcode": errcode,
        "errmsg": f"{msg}, hint: [{hint}], from ip: 127.0.0.1, "
        f"more info at https://open.work.weixin.qq.com/devtool/query?e={errcode}",
    }


def ok(**fields: Any) -> Body:
    return {"errcode": 0, "errmsg": "ok", **fields}


@dataclass
class GroupMsg:
    msgid: str
    sender: str
    payload: Body
    created: int
    # external_userid → 0 not sent yet, 1 sent, 2 not a friend, 3 quota
    status: dict[str, int] = field(default_factory=dict)


class FakeWecom:
    """The state of one fake corp: tokens, staff and their customers, group messages, tags, moments."""

    def __init__(
        self,
        provider: FakeProvider,
        *,
        corp_id: str = "wwfakecorp0001",
        secret: str = "s3cret",
        agent_id: int = 1000002,
        agent_secret: str = "agent-s3cret",
    ) -> None:
        self.provider = provider
        self.corp_id = corp_id
        self.secret = secret
        self.agent_id = agent_id
        self.agent_secret = agent_secret
        self.lock = threading.RLock()
        self.token_seconds = 7200
        self.token_delay = 0.0  # gettoken waits this long (widens races in concurrency tests)
        self.tokens: dict[str, float] = {}  # token → expires at (time.time())
        self.token_secrets: dict[str, str] = {}  # token → the secret it was issued for
        self.failures: dict[str, list[int]] = {}  # path → errcodes to answer next, in order
        self.members: set[str] = set()
        self.friends: set[tuple[str, str]] = set()  # (userid, external_userid)
        self.contacts: dict[str, Body] = {}  # external_userid → external_contact
        self.group_msgs: dict[str, GroupMsg] = {}
        self.tag_groups: list[Body] = []
        self.marked: dict[tuple[str, str], set[str]] = {}  # (userid, external_userid) → tag ids
        self.moment_jobs: dict[str, Body] = {}  # jobid → {"status", "payload", "moment_id"}
        self.moment_job_status = 3  # what get_moment_task_result says of a new job (1/2: still running)
        self.moments: dict[str, Body] = {}  # moment_id → {"users": [...], "published": set()}
        self.welcome_codes: dict[str, str] = {}  # code → "fresh" | "used"
        self.contact_ways: dict[str, Body] = {}
        self.app_messages: list[Body] = []  # delivered: {"userid", "agentid", "msgtype", "content", "msgid"}
        self._recent_sends: dict[str, float] = {}  # request JSON → sent at (duplicate check)
        self._ids = itertools.count(1)
        self.handlers: dict[str, WecomHandler] = {}
        self.handler("gettoken", self._gettoken, token=False)
        for path, fn in {
            "externalcontact/add_msg_template": self._add_msg_template,
            "externalcontact/get_groupmsg_send_result": self._get_groupmsg_send_result,
            "externalcontact/get_groupmsg_list_v2": self._get_groupmsg_list_v2,
            "externalcontact/add_corp_tag": self._add_corp_tag,
            "externalcontact/get_corp_tag_list": self._get_corp_tag_list,
            "externalcontact/mark_tag": self._mark_tag,
            "externalcontact/add_moment_task": self._add_moment_task,
            "externalcontact/get_moment_task_result": self._get_moment_task_result,
            "externalcontact/get_moment_task": self._get_moment_task,
            "externalcontact/get_moment_list": self._get_moment_list,
            "externalcontact/send_welcome_msg": self._send_welcome_msg,
            "externalcontact/add_contact_way": self._add_contact_way,
            "externalcontact/update_contact_way": self._update_contact_way,
            "externalcontact/del_contact_way": self._del_contact_way,
            "externalcontact/get": self._get_external_contact,
            "message/send": self._message_send,
        }.items():
            self.handler(path, fn)

    # --- set-up and inspection -----------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.provider.url

    def handler(self, path: str, fn: WecomHandler, *, token: bool = True) -> None:
        """Serve `/cgi-bin/<path>` (GET and POST) with `fn`, after the access-token check."""
        self.handlers[path] = fn

        def serve(request: Request, path: str = path, token: bool = token) -> tuple:
            return 200, self._serve(path, request, token)

        for method in ("GET", "POST"):
            self.provider.route(method, f"/cgi-bin/{path}", serve)

    def calls(self, path: str) -> list[Request]:
        return self.provider.calls(f"/cgi-bin/{path}")

    def fail(self, path: str, errcode: int, *, times: int = 1) -> None:
        """The next `times` calls of `path` answer `errcode` (after the token check)."""
        with self.lock:
            self.failures.setdefault(path, []).extend([errcode] * times)

    def expire_tokens(self) -> None:
        with self.lock:
            self.tokens = {token: 0.0 for token in self.tokens}

    def befriend(self, userid: str, *external_userids: str) -> None:
        """Staff member `userid` has these customers (external contacts)."""
        with self.lock:
            self.members.add(userid)
            for ext in external_userids:
                self.friends.add((userid, ext))
                self.contacts.setdefault(
                    ext, {"external_userid": ext, "name": f"customer {ext}", "type": 1, "gender": 0}
                )

    def add_staff(self, *userids: str) -> None:
        """Staff members in the corp and in the app's visible range (known to message/send)."""
        with self.lock:
            self.members.update(userids)

    def inbox(self, userid: str) -> list[str]:
        """The text of the application messages staff member `userid` received, oldest first."""
        with self.lock:
            return [m["content"] for m in self.app_messages if m["userid"].lower() == userid.lower()]

    def unfriend(self, userid: str, external_userid: str) -> None:
        with self.lock:
            self.friends.discard((userid, external_userid))

    def confirm(self, msgid: str, statuses: dict[str, int] | None = None) -> None:
        """The sender confirmed the group message in the app: each customer's status becomes 1 (sent)
        unless `statuses` says otherwise (2 not a friend, 3 over the quota)."""
        with self.lock:
            msg = self.group_msgs[msgid]
            for ext in msg.status:
                msg.status[ext] = (statuses or {}).get(ext, 1)

    def tag_id(self, group_name: str, name: str) -> str | None:
        for group in self.tag_groups:
            if group["group_name"] == group_name:
                for tag in group["tag"]:
                    if tag["name"] == name:
                        return tag["id"]
        return None

    def tagged(self, tag_id: str) -> set[tuple[str, str]]:
        """The (userid, external_userid) pairs marked with a tag."""
        with self.lock:
            return {pair for pair, tags in self.marked.items() if tag_id in tags}

    def publish(self, moment_id: str, userid: str) -> None:
        """Staff member `userid` published the moment in the app."""
        with self.lock:
            self.moments[moment_id]["published"].add(userid)

    def issue_welcome_code(self) -> str:
        code = f"welcome{next(self._ids)}"
        with self.lock:
            self.welcome_codes[code] = "fresh"
        return code

    def new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}{uuid.uuid4().hex[:12]}"

    # --- serving -------------------------------------------------------------------------------

    def _serve(self, path: str, request: Request, token: bool) -> Body:
        if token:
            access_token = request.query.get("access_token")
            if not access_token:
                return error(41001)
            with self.lock:
                expires = self.tokens.get(access_token)
            if expires is None:
                return error(40014)
            if expires <= time.time():
                return error(42001)
        with self.lock:
            queued = self.failures.get(path)
            if queued:
                return error(queued.pop(0))
        if request.method == "POST" and path != "gettoken":
            try:
                request.json  # noqa: B018 - WeCom refuses a body that is not JSON
            except ValueError:
                return error(40058, "invalid json")
        return self.handlers[path](request)

    def _gettoken(self, request: Request) -> Body:
        if request.method != "GET":
            return error(40058, "gettoken is GET")
        if request.query.get("corpid") != self.corp_id:
            return error(40013)
        secret = request.query.get("corpsecret")
        if secret not in (self.secret, self.agent_secret):
            return error(40001)
        if self.token_delay:
            time.sleep(self.token_delay)
        token = uuid.uuid4().hex + uuid.uuid4().hex
        with self.lock:
            self.tokens[token] = time.time() + self.token_seconds
            self.token_secrets[token] = secret
        return ok(access_token=token, expires_in=self.token_seconds)

    def _check_attachments(self, attachments: list[Body], *, moment: bool = False) -> str:
        if len(attachments) > (1 if moment and any(a.get("msgtype") == "link" for a in attachments) else 9):
            return "too many attachments"
        for attachment in attachments:
            kind = attachment.get("msgtype")
            if kind not in ("image", "link", "miniprogram", "video", "file"):
                return f"invalid msgtype {kind}"
            if kind == "link":
                link = attachment.get("link") or {}
                if not link.get("url") or not (link.get("title") or moment):
                    return "link needs title and url"
                if len(link.get("url", "")) > 2048 or len(link.get("title", "").encode()) > 128:
                    return "link too long"
        return ""

    def _add_msg_template(self, request: Request) -> Body:
        body = request.json or {}
        if request.method != "POST":
            return error(40058)
        chat_type = body.get("chat_type", "single")
        if chat_type not in ("single", "group"):
            return error(40058, "invalid chat_type")
        text = (body.get("text") or {}).get("content", "")
        attachments = body.get("attachments") or []
        if not text and not attachments:
            return error(40058, "text or attachments required")
        if len(text.encode()) > 4000:
            return error(40058, "text content exceed limit")
        if problem := self._check_attachments(attachments):
            return error(40058, problem)
        externals = body.get("external_userid") or []
        if not isinstance(externals, list) or len(externals) > 10000:
            return error(40058, "external_userid exceed limit")
        sender = body.get("sender") or ""
        if sender and sender not in self.members:
            return error(60111)
        with self.lock:
            fail_list = [ext for ext in externals if (sender, ext) not in self.friends]
            msgid = self.new_id("msgGCAAAXtWyujaWJHDDGi0m")
            self.group_msgs[msgid] = GroupMsg(
                msgid=msgid,
                sender=sender,
                payload=body,
                created=int(time.time()),
                status={ext: 0 for ext in externals if ext not in fail_list},
            )
        return ok(fail_list=fail_list, msgid=msgid)

    def _page(self, items: list, request: Request, *, default: int, maximum: int) -> tuple[list, str]:
        body = request.json or {}
        limit = int(body.get("limit") or default)
        if limit > maximum:
            raise ValueError("limit exceed")
        start = int(body.get("cursor") or 0)
        page = items[start : start + limit]
        more = start + limit < len(items)
        return page, str(start + limit) if more else ""

    def _get_groupmsg_send_result(self, request: Request) -> Body:
        body = request.json or {}
        msg = self.group_msgs.get(body.get("msgid", ""))
        if msg is None:
            return error(40058, "invalid msgid")
        if not body.get("userid"):
            return error(40058, "userid required")
        with self.lock:
            rows = []
            if body["userid"] == msg.sender:
                for ext, status in msg.status.items():
                    row: Body = {"external_userid": ext, "userid": msg.sender, "status": status}
                    if status == 1:
                        row["send_time"] = msg.created + 60
                    rows.append(row)
        try:
            page, cursor = self._page(rows, request, default=500, maximum=1000)
        except ValueError:
            return error(40058, "limit exceed")
        return ok(next_cursor=cursor, send_list=page)

    def _get_groupmsg_list_v2(self, request: Request) -> Body:
        body = request.json or {}
        if body.get("chat_type") not in ("single", "group"):
            return error(40058, "invalid chat_type")
        start, end = int(body.get("start_time") or 0), int(body.get("end_time") or 0)
        if not start or not end or end - start > 31 * 86400:
            return error(40058, "invalid time range")
        with self.lock:
            rows = [
                {
                    "msgid": m.msgid,
                    "creator": "",
                    "create_time": str(m.created),
                    "create_type": 0,
                    "text": m.payload.get("text", {}),
                    "attachments": m.payload.get("attachments", []),
                }
                for m in self.group_msgs.values()
                if start <= m.created <= end and m.payload.get("chat_type", "single") == body["chat_type"]
            ]
        try:
            page, cursor = self._page(rows, request, default=50, maximum=100)
        except ValueError:
            return error(40058, "limit exceed")
        return ok(next_cursor=cursor, group_msg_list=page)

    def _add_corp_tag(self, request: Request) -> Body:
        body = request.json or {}
        tags = body.get("tag") or []
        if not tags or any(not t.get("name") or len(t["name"]) > 30 for t in tags):
            return error(40058, "invalid tag name")
        with self.lock:
            group = None
            if body.get("group_id"):
                group = next((g for g in self.tag_groups if g["group_id"] == body["group_id"]), None)
                if group is None:
                    return error(40068)
            elif body.get("group_name"):
                group = next((g for g in self.tag_groups if g["group_name"] == body["group_name"]), None)
                if group is None:
                    group = {
                        "group_id": self.new_id("etXXXXXXXXXXXXXXXXXXXXg"),
                        "group_name": body["group_name"],
                        "create_time": int(time.time()),
                        "order": int(body.get("order") or 0),
                        "tag": [],
                    }
                    self.tag_groups.append(group)
            else:
                return error(40058, "group_id or group_name required")
            names = {t["name"] for t in group["tag"]}
            if any(t["name"] in names for t in tags):
                return error(40071)
            added = []
            for t in tags:
                tag = {
                    "id": self.new_id("etXXXXXXXXXXXXXXXXXXXXt"),
                    "name": t["name"],
                    "create_time": int(time.time()),
                    "order": int(t.get("order") or 0),
                }
                group["tag"].append(tag)
                added.append(tag)
            return ok(tag_group={**{k: v for k, v in group.items() if k != "tag"}, "tag": added})

    def _get_corp_tag_list(self, request: Request) -> Body:
        body = request.json or {}
        tag_ids, group_ids = set(body.get("tag_id") or []), set(body.get("group_id") or [])
        with self.lock:
            groups = []
            for group in self.tag_groups:
                if group_ids and group["group_id"] not in group_ids:
                    continue
                tags = [t for t in group["tag"] if not tag_ids or t["id"] in tag_ids]
                if tags or not tag_ids:
                    groups.append({**group, "tag": tags})
        return ok(tag_group=groups)

    def _all_tag_ids(self) -> set[str]:
        return {t["id"] for g in self.tag_groups for t in g["tag"]}

    def _mark_tag(self, request: Request) -> Body:
        body = request.json or {}
        userid, ext = body.get("userid", ""), body.get("external_userid", "")
        add, remove = body.get("add_tag") or [], body.get("remove_tag") or []
        if not userid or not ext or not (add or remove):
            return error(40058)
        with self.lock:
            if userid not in self.members:
                return error(60111)
            if (userid, ext) not in self.friends:
                return error(84061)
            if not set(add) | set(remove) <= self._all_tag_ids():
                return error(40068)
            tags = self.marked.setdefault((userid, ext), set())
            tags |= set(add)
            tags -= set(remove)
        return ok()

    def _add_moment_task(self, request: Request) -> Body:
        body = request.json or {}
        text = (body.get("text") or {}).get("content", "")
        attachments = body.get("attachments") or []
        if not text and not attachments:
            return error(40058, "text or attachments required")
        if len(text) > 2000:
            return error(40058, "text content exceed limit")
        if problem := self._check_attachments(attachments, moment=True):
            return error(40058, problem)
        visible = body.get("visible_range") or {}
        users = (visible.get("sender_list") or {}).get("user_list") or []
        tag_list = (visible.get("external_contact_list") or {}).get("tag_list") or []
        with self.lock:
            jobid = self.new_id("jobid")
            moment_id = self.new_id("momentAAAA")
            known_tags = self._all_tag_ids()
            self.moment_jobs[jobid] = {
                "status": self.moment_job_status,
                "payload": body,
                "moment_id": moment_id,
                "invalid_users": [u for u in users if u not in self.members],
                "invalid_tags": [t for t in tag_list if t not in known_tags],
            }
            self.moments[moment_id] = {
                "users": [u for u in users if u in self.members],
                "tags": tag_list,
                "published": set(),
                "payload": body,
                "created": int(time.time()),
            }
        return ok(jobid=jobid)

    def _get_moment_task_result(self, request: Request) -> Body:
        if request.method != "GET":
            return error(40058, "get_moment_task_result is GET")
        job = self.moment_jobs.get(request.query.get("jobid", ""))
        if job is None:
            return error(40058, "invalid jobid")
        if job["status"] != 3:
            return ok(status=job["status"], type="add_moment_task")
        result = {
            "errcode": 0,
            "errmsg": "ok",
            "moment_id": job["moment_id"],
            "invalid_sender_list": {"user_list": job["invalid_users"], "department_list": []},
            "invalid_external_contact_list": {"tag_list": job["invalid_tags"]},
        }
        return ok(status=3, type="add_moment_task", result=result)

    def _get_moment_task(self, request: Request) -> Body:
        body = request.json or {}
        moment = self.moments.get(body.get("moment_id", ""))
        if moment is None:
            return error(40058, "invalid moment_id")
        with self.lock:
            rows = [
                {"userid": user, "publish_status": int(user in moment["published"])}
                for user in moment["users"]
            ]
        try:
            page, cursor = self._page(rows, request, default=500, maximum=1000)
        except ValueError:
            return error(40058, "limit exceed")
        return ok(next_cursor=cursor, task_list=page)

    def _get_moment_list(self, request: Request) -> Body:
        body = request.json or {}
        start, end = int(body.get("start_time") or 0), int(body.get("end_time") or 0)
        if not start or not end or end - start > 30 * 86400:
            return error(40058, "invalid time range")
        with self.lock:
            rows = [
                {
                    "moment_id": moment_id,
                    "creator": "",
                    "create_time": str(m["created"]),
                    "create_type": 0,
                    "visible_type": 0,
                    "text": m["payload"].get("text", {}),
                }
                for moment_id, m in self.moments.items()
                if start <= m["created"] <= end and body.get("filter_type", 2) in (0, 2)
            ]
        try:
            page, cursor = self._page(rows, request, default=20, maximum=20)
        except ValueError:
            return error(40058, "limit exceed")
        return ok(next_cursor=cursor, moment_list=page)

    def _send_welcome_msg(self, request: Request) -> Body:
        body = request.json or {}
        code = body.get("welcome_code", "")
        text = (body.get("text") or {}).get("content", "")
        attachments = body.get("attachments") or []
        if not code or (not text and not attachments):
            return error(40058)
        if len(text.encode()) > 4000:
            return error(40058, "text content exceed limit")
        if problem := self._check_attachments(attachments):
            return error(40058, problem)
        with self.lock:
            state = self.welcome_codes.get(code)
            if state != "fresh":
                return error(41051)  # used, expired (20 s) or the customer already chatted
            self.welcome_codes[code] = "used"
        return ok()

    def _add_contact_way(self, request: Request) -> Body:
        body = request.json or {}
        kind, scene = body.get("type"), body.get("scene")
        users = body.get("user") or []
        if kind not in (1, 2) or scene not in (1, 2):
            return error(40058, "invalid type or scene")
        if kind == 1 and len(users) != 1:
            return error(40058, "type 1 needs exactly one user")
        if not users and not body.get("party"):
            return error(40058, "user or party required")
        if len(body.get("state") or "") > 30:
            return error(40058, "state exceed limit")
        if any(u not in self.members for u in users):
            return error(60111)
        config_id = uuid.uuid4().hex
        with self.lock:
            self.contact_ways[config_id] = body
        answer = ok(config_id=config_id)
        if scene == 2:
            answer["qr_code"] = f"https://wework.qpic.cn/wwpic/{config_id}/0"
        return answer

    def _update_contact_way(self, request: Request) -> Body:
        body = request.json or {}
        with self.lock:
            way = self.contact_ways.get(body.get("config_id", ""))
            if way is None:
                return error(40058, "invalid config_id")
            way.update({k: v for k, v in body.items() if k != "config_id"})
        return ok()

    def _del_contact_way(self, request: Request) -> Body:
        body = request.json or {}
        with self.lock:
            if self.contact_ways.pop(body.get("config_id", ""), None) is None:
                return error(40058, "invalid config_id")
        return ok()

    def _get_external_contact(self, request: Request) -> Body:
        if request.method != "GET":
            return error(40058, "externalcontact/get is GET")
        ext = request.query.get("external_userid", "")
        with self.lock:
            contact = self.contacts.get(ext)
            if contact is None:
                return error(40096)
            follow = [
                {
                    "userid": userid,
                    "remark": "",
                    "description": "",
                    "createtime": int(time.time()),
                    "tags": [],
                    "remark_mobiles": [],
                    "add_way": 1,
                    "oper_userid": userid,
                    **contact.get("_follow", {}).get(userid, {}),
                }
                for userid, e in sorted(self.friends)
                if e == ext
            ]
        return ok(
            external_contact={k: v for k, v in contact.items() if not k.startswith("_")},
            follow_user=follow,
            next_cursor="",
        )

    def _message_send(self, request: Request) -> Body:
        if request.method != "POST":
            return error(40058, "message/send is POST")
        body = request.json or {}
        with self.lock:
            if self.token_secrets.get(request.query["access_token"]) != self.agent_secret:
                return error(301002)  # a 客户联系 token cannot send as the app
        agentid = body.get("agentid")
        if not isinstance(agentid, int) or isinstance(agentid, bool) or agentid != self.agent_id:
            return error(40056)
        if body.get("msgtype") != "text":
            return error(40008)
        content = (body.get("text") or {}).get("content")
        if not isinstance(content, str) or not content:
            return error(44004)
        if len(content.encode()) > 2048:
            return error(40058, "text content exceed limit")
        touser = body.get("touser")
        userids = [u for u in touser.split("|") if u] if isinstance(touser, str) else []
        if not userids:
            return error(82001)
        with self.lock:
            known = {m.lower() for m in self.members}
            invalid = [u.lower() for u in userids if u.lower() not in known]
            if len(invalid) == len(userids):
                return error(81013)
            msgid = self.new_id("msgid")
            request_json = json.dumps(body, sort_keys=True, ensure_ascii=False)
            sent_at = self._recent_sends.get(request_json)
            interval = int(body.get("duplicate_check_interval") or 1800)
            duplicate = (
                bool(body.get("enable_duplicate_check")) and sent_at and time.time() - sent_at < interval
            )
            if not duplicate:  # WeCom answers ok to a duplicate and delivers nothing
                self._recent_sends[request_json] = time.time()
                for userid in userids:
                    if userid.lower() in known:
                        self.app_messages.append(
                            {
                                "userid": userid,
                                "agentid": agentid,
                                "msgtype": "text",
                                "content": content,
                                "msgid": msgid,
                            }
                        )
        answer = ok(msgid=msgid)
        if invalid:
            answer["invaliduser"] = "|".join(invalid)
        return answer
