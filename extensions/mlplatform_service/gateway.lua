-- The rollout gateway's shadow (gateway.py renders the HAProxy configuration that loads this file).
--
-- `http-request lua.mirror <Serve's url> <champion route> <candidate route> <endpoint>` copies a request to the
-- candidate (the version the traffic map names, txn.candidate_version) in a task of its own: the caller's request goes on to the champion at
-- once and never waits for the candidate. At most MLPLATFORM_MIRRORS mirrors are in flight (the rest are not
-- mirrored and counted, so a slow candidate cannot pile up memory). Each mirror's answer is one JSON log
-- line, in the fields of the frontend's own lines (gateway.py's LOG_FORMAT), which the evidence shipper reads.

local MAX_IN_FLIGHT = tonumber(os.getenv("MLPLATFORM_MIRRORS") or "128")
local TIMEOUT_MS = tonumber(os.getenv("MLPLATFORM_MIRROR_TIMEOUT_MS") or "10000")
local in_flight, skipped = 0, 0

local function json_string(s)
  -- JSON-escaped text in quotes (control characters, quotes and backslashes; other bytes as they are).
  return '"' .. (tostring(s or ""):gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end)) .. '"'
end

local function micros(t)
  return t.sec * 1000000 + t.usec
end

local function mirror(r)
  local started = core.now()
  local client = core.httpclient()  -- HAProxy 2.8: one request per instance
  local ok, res = pcall(client.post, client, {url = r.url, body = r.body, timeout = TIMEOUT_MS,
                                               headers = {["content-type"] = {r.ctype}, ["content-length"] = {tostring(#r.body)},
                                                          ["x-request-id"] = {r.id}}})
  local latency = micros(core.now()) - micros(started)
  in_flight = in_flight - 1
  local status, body = -1, ""
  if ok and res then
    status, body = res.status or -1, res.body or ""
  else
    body = '{"message": "the candidate did not answer"}'
  end
  core.log(core.info, string.format(
    '{"id":%s,"endpoint":%s,"side":"candidate","mode":%s,"version":%s,"t0":"%s","latency_us":"%d",'
      .. '"status":%d,"key":%s,"req":%s,"res":%s,"keyed":%s,"mirrored":true,"skipped":%d}',
    json_string(r.id), json_string(r.endpoint), json_string(r.mode), json_string(r.version), r.t0, latency,
    status, json_string(r.key), json_string(r.body), json_string(body), json_string(r.key ~= "" and "1" or ""), skipped))
end

core.register_action("mirror", {"http-req"}, function(txn, url, champion_route, candidate_route, endpoint)
  if in_flight >= MAX_IN_FLIGHT then
    skipped = skipped + 1
    return
  end
  in_flight = in_flight + 1
  local path = txn.sf:pathq()
  core.register_task(mirror, {
    id = txn.sf:unique_id(), url = url .. candidate_route .. path:sub(#champion_route + 1),
    body = txn.sf:req_body() or "", ctype = txn.sf:req_fhdr("content-type") or "application/json",
    key = txn.sf:req_fhdr("x-rollout-key") or "", t0 = txn:get_var("txn.t0") or "",
    version = txn:get_var("txn.candidate_version") or "", mode = "shadow", endpoint = endpoint})
end, 4)
