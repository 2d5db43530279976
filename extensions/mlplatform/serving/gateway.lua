-- The rollout gateway's shadow and canary guard (gateway.py renders the HAProxy configuration that loads this file).
--
-- `http-request lua.mirror` copies a request to the candidate of its endpoint (txn.endpoint; the version the traffic
-- map names, txn.candidate_version) in a task of its own: the caller's request goes on to the champion at once and
-- never waits for the candidate. At most MLPLATFORM_MIRRORS mirrors are in flight, so a slow candidate cannot pile
-- up memory; beyond that, and for a body longer than HAProxy's buffer (gateway.py's MAX_BODY: the candidate would get
-- it cut), the request is not mirrored and the champion's line says so (txn.mirror). Each mirror's answer is one JSON
-- log line, in the fields of the frontend's own lines (gateway.py's LOG_FORMAT), which the evidence shipper reads.
--
-- `lua.candidate_up` says whether the endpoint's candidate answers its health route: one task checks the candidates
-- of the endpoints that asked in the last minute, every MLPLATFORM_HEALTH_MS (down after two failures in a row, up
-- after one success; unknown, so down, until its first check, within 0.1 s of the first ask). A canary sends
-- nothing to a candidate that is down.

local MAX_IN_FLIGHT = tonumber(os.getenv("MLPLATFORM_MIRRORS") or "128")
local TIMEOUT_MS = tonumber(os.getenv("MLPLATFORM_MIRROR_TIMEOUT_MS") or "10000")
local LOG_REQUEST = tonumber(os.getenv("MLPLATFORM_LOG_REQUEST_BYTES") or "32768")
local LOG_RESPONSE = tonumber(os.getenv("MLPLATFORM_LOG_RESPONSE_BYTES") or "16384")
local UPSTREAM = os.getenv("MLPLATFORM_UPSTREAM") or ""
local HEALTH_MS = tonumber(os.getenv("MLPLATFORM_HEALTH_MS") or "1000")
local CANDIDATE_SUFFIX = os.getenv("MLPLATFORM_CANDIDATE_SUFFIX") or "--candidate"
local FORGET_S = 60  -- an endpoint no canary request asked about for this long is no longer checked
local in_flight = 0
local ESCAPES = {['"'] = '\\"', ['\\'] = '\\\\'}

local function json_string(s)
  -- JSON-escaped text in quotes (quotes and backslashes as \" and \\, other control characters as \u00XX).
  return '"' .. (tostring(s or ""):gsub('[%c"\\]', function(c)
    return ESCAPES[c] or string.format("\\u%04x", c:byte())
  end)) .. '"'
end

local function logged(body, limit)
  -- The body for the evidence, and whether it was left out (longer than the limit: "unknown", not a prefix).
  if #body > limit then return "", true end
  return body, false
end

local function micros(t)
  return t.sec * 1000000 + t.usec
end

local function mirror_once(r)
  local started = core.now()
  local client = core.httpclient()  -- HAProxy 2.8: one request per instance
  local headers = {["content-type"] = {r.ctype}, ["content-length"] = {tostring(#r.body)}, ["x-request-id"] = {r.id}}
  local ok, res = pcall(client.post, client, {url = r.url, body = r.body, timeout = TIMEOUT_MS, headers = headers})
  local latency = micros(core.now()) - micros(started)
  local status, body = -1, ""
  if ok and res then
    status, body = res.status or -1, res.body or ""
  else
    body = '{"message": "the candidate did not answer"}'
  end
  if not r.sampled then return end  -- the champion's line is not recorded either
  local request, request_unknown = logged(r.body, LOG_REQUEST)
  local response, response_unknown = logged(body, LOG_RESPONSE)
  core.log(core.notice, string.format(  -- notice: the global log's level (its HTTP client's own lines are info)
    '{"id":%s,"team":%s,"endpoint":%s,"side":"candidate","mode":%s,"version":%s,"t0":"%s","latency_us":"%d",'
      .. '"status":%d,"key":%s,"req":%s,"res":%s,"req_unknown":%s,"res_unknown":%s,"keyed":%s,"mirrored":true}',
    json_string(r.id), json_string(r.team), json_string(r.endpoint), json_string(r.mode), json_string(r.version), r.t0, latency,
    status, json_string(r.key), json_string(request), json_string(response), tostring(request_unknown),
    tostring(response_unknown), json_string(r.key ~= "" and "1" or "")))
end

local function mirror(r)
  pcall(mirror_once, r)  -- whatever fails, the mirror is no longer in flight
  in_flight = in_flight - 1
end

local function candidate_url(endpoint, pathq)
  -- /<endpoint>/rest → <Serve>/<endpoint>--candidate/rest
  return UPSTREAM .. "/" .. endpoint .. CANDIDATE_SUFFIX .. pathq:sub(#endpoint + 2)
end

core.register_action("mirror", {"http-req"}, function(txn)
  local body = txn.sf:req_body() or ""
  if in_flight >= MAX_IN_FLIGHT or #body < (tonumber(txn.f:req_body_size()) or 0) then  -- full, or a body cut
    txn:set_var("txn.mirror", "skipped")  -- in the champion's line: the evidence counts what was not mirrored
    return
  end
  txn:set_var("txn.mirror", "sent")
  in_flight = in_flight + 1
  local endpoint = txn:get_var("txn.endpoint") or ""
  core.register_task(mirror, {
    id = txn.sf:unique_id(), url = candidate_url(endpoint, txn.sf:pathq()),
    body = body, ctype = txn.sf:req_fhdr("content-type") or "application/json",
    key = txn.sf:req_fhdr("x-rollout-key") or "", t0 = txn:get_var("txn.t0") or "",
    version = txn:get_var("txn.candidate_version") or "", mode = "shadow", endpoint = endpoint,
    team = txn:get_var("txn.team") or "", sampled = txn:get_var("txn.sampled") == "1"})
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
  local client = core.httpclient()
  local ok, res = pcall(client.get, client, {url = UPSTREAM .. "/" .. endpoint .. CANDIDATE_SUFFIX .. "/health",
                                             timeout = HEALTH_MS})
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
