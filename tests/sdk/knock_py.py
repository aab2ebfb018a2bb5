"""Knock's Python SDK (knockapi 1.33.0) against prefsd over the Unix socket (httpx `uds`),
with strict response validation: every method that maps to a route of rest.md §4, each
result checked. Run by tests/sdk/run.sh; env: PREFSD_SOCKET, KNOCK_API_KEY."""

import os
import uuid

import httpx
from knockapi import Knock, DefaultHttpxClient

knock = Knock(
    api_key=os.environ["KNOCK_API_KEY"],
    base_url="http://prefsd",
    http_client=DefaultHttpxClient(transport=httpx.HTTPTransport(uds=os.environ["PREFSD_SOCKET"])),
    _strict_response_validation=True,
    max_retries=0,
)

run = uuid.uuid4().hex[:8]
uid = f"py {run}/jane+1"  # a space, a slash and a plus: each must survive the path


def check(cond, what):
    if not cond:
        raise AssertionError(what)


# Users: #1 #2 #4 #6-9
user = knock.users.update(uid, name="Jane", email="jane@example.com", created_at="2026-01-01T00:00:00Z",
                          preferences={"default": {"channel_types": {"sms": True}}}, extra_body={"plan": "pro"})
check(user.id == uid and user.name == "Jane", f"update: {user}")
check(user.to_dict().get("plan") == "pro", f"custom property flattened: {user}")
got = knock.users.get(uid)
check(got.email == "jane@example.com" and got.created_at is not None, f"get: {got}")
sets = knock.users.list_preferences(uid)
check([s.id for s in sets] == ["default"] and sets[0].channel_types.sms is True, f"list_preferences: {sets}")
ps = knock.users.set_preferences(uid, "default", channel_types={"email": False},
                                 workflows={"new-comment": {"channel_types": {"in_app_feed": False}}})
check(ps.id == "default" and ps.channel_types.email is False, f"set_preferences: {ps}")
ps = knock.users.set_preferences(uid, "default", _persistence_strategy="merge", categories={"marketing": False})
check(ps.channel_types.email is False and ps.categories["marketing"] is False, f"merge: {ps}")
ps = knock.users.get_preferences(uid, "default")
check(ps.channel_types.email is False, f"get_preferences: {ps}")
ps = knock.users.get_preferences(uid, "default", tenant="acme")
check(ps.id == "acme", f"get_preferences tenant: {ps}")
check(knock.users.unset_preferences(uid, "default") is None, "unset_preferences")
check(knock.users.list_preferences(uid) == [], "unset left a set")
other = f"py {run}/other"
knock.users.update(other, name="Other")
seen = [u.id for u in knock.users.list(page_size=1, include=["preferences"])]
check(uid in seen and other in seen, f"list pages through: {seen}")
desc = [u.id for u in knock.users.list(order="desc")]
check(desc.index(other) < desc.index(uid), f"list desc: {desc}")
# #5 merge
merged = knock.users.merge(uid, from_user_id=other)
check(merged.id == uid, f"merge: {merged}")
try:
    knock.users.get(other)
    raise AssertionError("the merged user still exists")
except Exception as e:  # noqa: BLE001
    check(getattr(e, "status_code", None) == 404, f"get merged: {e!r}")

# Bulk: #16-18, #35
op = knock.users.bulk.set_preferences(user_ids=[uid, f"py {run}/b"],
                                      preferences={"channel_types": {"push": False}})
check(op.status == "queued" and op.estimated_total_rows == 2, f"bulk set_preferences: {op}")
op = knock.users.bulk.identify(users=[{"id": f"py {run}/b", "name": "B"}, {"id": f"py {run}/c"}])
check(op.name == "users.identify", f"bulk identify: {op}")
got = knock.bulk_operations.get(op.id)
check(got.id == op.id, f"bulk_operations.get: {got}")
op = knock.users.bulk.delete(user_ids=[f"py {run}/c"])
check(op.name == "users.delete", f"bulk delete: {op}")

# Objects: #19-28
col = f"projects-{run}"
obj = knock.objects.set(col, "p 1/a", name="Project", extra_body={"color": "red"})
check(obj.collection == col and obj.properties["color"] == "red", f"objects.set: {obj}")
check(knock.objects.get(col, "p 1/a").properties["name"] == "Project", "objects.get")
check([o.id for o in knock.objects.list(col)] == ["p 1/a"], "objects.list")
ps = knock.objects.set_preferences(col, "p 1/a", "default", channel_types={"email": False})
check(ps.channel_types.email is False, f"objects.set_preferences: {ps}")
check(knock.objects.get_preferences(col, "p 1/a", "default").channel_types.email is False, "objects.get_preferences")
check(len(knock.objects.list_preferences(col, "p 1/a")) == 1, "objects.list_preferences")
check(knock.objects.unset_preferences(col, "p 1/a", "default") is None, "objects.unset_preferences")
op = knock.objects.bulk.set(col, objects=[{"id": "p2", "name": "Two"}])
check(op.name == f"objects.{col}.set", f"objects.bulk.set: {op}")
op = knock.objects.bulk.delete(col, object_ids=["p2"])
check(op.name == f"objects.{col}.delete", f"objects.bulk.delete: {op}")
check(knock.objects.delete(col, "p 1/a") is None, "objects.delete")

# Tenants: #29-34
tid = f"t-{run}"
t = knock.tenants.set(tid, name="Tenant", settings={"preference_set": {"channel_types": {"sms": True}},
                                                    "branding": {"primary_color": "#000000"}},
                      extra_body={"region": "eu"})
check(t.id == tid and t.name == "Tenant" and t.settings.preference_set.id == "default", f"tenants.set: {t}")
check(t.settings.branding.primary_color == "#000000", f"branding: {t}")
t = knock.tenants.get(tid, resolve_full_preference_settings=True)
check(t.settings.preference_set.channel_types.sms is True, f"tenants.get: {t}")
check([x.id for x in knock.tenants.list(tenant_id=tid)] == [tid], "tenants.list")
op = knock.tenants.bulk.set(tenants=[f"{tid}-b", {"id": f"{tid}-c", "name": "C"}])
check(op.name == "tenants.set", f"tenants.bulk.set: {op}")
op = knock.tenants.bulk.delete(tenant_ids=[f"{tid}-b", f"{tid}-c"])
check(op.name == "tenants.delete", f"tenants.bulk.delete: {op}")
check(knock.tenants.delete(tid) is None, "tenants.delete")
check(knock.users.delete(uid) is None, "users.delete")
print("python: ok")
