-- The rollout gateway's shadow and canary guard (gateway.py renders the HAProxy configuration that loads this file).
--
-- `http-request lua.mirror` copies a request to the candidate of its endpoint (txn.endpoint; the version the traffic
-- map names, txn.candidate_version) in a task of its own: the caller's request goes on to the champion at once and
-- never waits for the candidate. At most MLPLATFORM_MIRRORS mirrors are in flight, so a slow candidate cannot pile
-- up memory; beyond that, and for a body longer than HAProxy's buffer (gateway.py's MAX_BODY: the candidate would get
-- it cut), the request is not mirrored and the champion's line says so (txn.mirror). A mirror goes through the
-- gateway's `mirrors` frontend (MLPLATFORM_MIRROR_SOCKET), which times and logs the candidate's answer as the
-- `endpoints` frontend does the champion's; the X-Mirror-* headers tell it what the traffic map said.
--
-- `lua.candidate_up` says whether the endpoint's candidate answers its health route: one task checks the candidates
-- of the endpoints that asked in the last minute, every MLPLATFORM_HEALTH_MS (down after two failures in a row, up
-- after one success; unknown, so down, until its first check, within 0.1 s of the first ask). A canary sends
-- nothing to a candidate that is down.

local MAX_IN_FLIGHT = tonumber(os.getenv("MLPLATFORM_MIRRORS") or "128")
-- The mirrors frontend answers 504 at MLPLATFORM_MIRROR_TIMEOUT_MS; this client waits a little longer for that.
local TIMEOUT_MS = tonumber(os.getenv("MLPLATFORM_MIRROR_TIMEOUT_MS") or "10000") + 5000
local MIRROR_SOCKET = "unix@" .. (os.getenv("MLPLATFORM_MIRROR_SOCKET") or "")
local HEALTH_MS = tonumber(os.getenv("MLPLATFORM_HEALTH_MS") or "1000")
local FORGET_S = 60  -- an endpoint no canary request asked about for this long is no longer checked
local in_flight = 0

local function mirror_once(r)
  local client = core.httpclient()  -- HAProxy 2.8: one request per instance
  local headers = {["content-type"] = {r.ctype}, ["content-length"] = {tostring(#r.body)}, ["x-request-id"] = {r.id},
                   ["x-mirror-team"] = {r.team}, ["x-mirror-version"] = {r.version}, ["x-mirror-t0"] = {r.t0},
                   ["x-mirror-sampled"] = {r.sampled}}
  if r.keyed then headers["x-rollout-key"] = {r.key} end
  client:post({url = "http://mirror" .. r.pathq, dst = MIRROR_SOCKET, body = r.body, timeout = TIMEOUT_MS,
               headers = headers})
end

local function mirror(r)
  pcall(mirror_once, r)  -- whatever fails, the mirror is no longer in flight
  in_flight = in_flight - 1
end

core.register_action("mirror", {"http-req"}, function(txn)
  local body = txn.sf:req_body() or ""
  if in_flight >= MAX_IN_FLIGHT or #body < (tonumber(txn.f:req_body_size()) or 0) then  -- full, or a body cut
    txn:set_var("txn.mirror", "skipped")  -- in the champion's line: the evidence counts what was not mirrored
    return
  end
  txn:set_var("txn.mirror", "sent")
  in_flight = in_flight + 1
  core.register_task(mirror, {
    id = txn.sf:unique_id(), pathq = txn.sf:pathq(), body = body,
    ctype = txn.sf:req_fhdr("content-type") or "application/json",
    keyed = txn:get_var("txn.keyed") == "1", key = txn:get_var("txn.key") or "",
    t0 = txn:get_var("txn.t0") or "", version = txn:get_var("txn.candidate_version") or "",
    team = txn:get_var("txn.team") or "", sampled = txn:get_var("txn.sampled") or "0"})
end, 0)

-- The candidates' health: endpoint → {up, fails, asked (seconds), due (ms: its next check)}.
local watched = {}
local TICK_MS = 100  -- a candidate asked about for the first time is checked within this

local function now_ms()
  local t = core.now()
  return t.sec * 1000 + t.usec // 1000
end

core.register_fetches("candidate_up", function(txn)
  local endpoint = txn:get_var("txn.endpoint") or ""
  local state = watched[endpoint]
  if state == nil then
    watched[endpoint] = {up = false, fails = 0, asked = core.now().sec, due = 0}
    return "0"
  end
  state.asked = core.now().sec
  return state.up and "1" or "0"
end)

local function check(endpoint, state)
  -- Through the mirrors frontend too (it finds the candidate as a mirror's request does); not logged.
  local client = core.httpclient()
  local ok, res = pcall(client.get, client, {url = "http://mirror/" .. endpoint .. "/health", dst = MIRROR_SOCKET,
                                             timeout = HEALTH_MS, headers = {["x-mirror-check"] = {"1"}}})
  if ok and res and res.status == 200 then
    state.up, state.fails = true, 0
  else
    state.fails = state.fails + 1
    if state.fails >= 2 then state.up = false end
  end
end

core.register_task(function()
  while true do
    local seconds = core.now().sec
    for endpoint, state in pairs(watched) do
      if seconds - state.asked > FORGET_S then
        watched[endpoint] = nil  -- allowed while traversing: the field exists
      elseif state.due <= now_ms() then
        pcall(check, endpoint, state)
        state.due = now_ms() + HEALTH_MS
      end
    end
    core.msleep(TICK_MS)
  end
end)

-- `show candidates` on the admin socket: one line per watched endpoint, "<endpoint> up|down".
core.register_cli({"show", "candidates"}, "show candidates : each watched candidate's health", function(applet)
  for endpoint, state in pairs(watched) do
    applet:send(endpoint .. " " .. (state.up and "up" or "down") .. "\n")
  end
end)
