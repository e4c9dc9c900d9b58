-- wrk script for bench/http.py: one scenario of the Stories load profile.
--
--   wrk -t2 -c32 -d15s -s bench/http_lua/stories.lua http://127.0.0.1:PORT -- DATA SCENARIO [PROGRESS]
--
-- DATA: one line per user, "<token>\t<story id> <story id> ...\t<author id> ..." (stories that user may see,
-- and their authors).
-- SCENARIO: feed | tray | author_stories | story_get | view | react | create | mixed (55/10/5/15/8/5/2 % of the
-- first seven: a client opens the feed or the tray, then reads, views and reacts to stories).
-- PROGRESS (optional): each thread writes its response count to PROGRESS.<thread>, at most once a second.
-- done() prints one JSON line: requests, duration, latency percentiles (µs), status counts, socket errors.

local EMOJIS = { "👍", "❤️", "😂", "😮", "😢", "🔥" }
local MIX = {
  { 55, "feed" }, { 65, "tray" }, { 70, "author_stories" }, { 85, "story_get" }, { 93, "view" }, { 98, "react" },
  { 100, "create" },
}

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_id", #threads)
end

local users = {}
local scenario = "feed"
local progress_path = nil
local responses = 0
local progress_written = 0
local created = 0
statuses = {}

local function load_users(path)
  for line in io.lines(path) do
    local token, ids, author_ids = line:match("^(%S+)\t([^\t]*)\t?(.*)$")
    local stories, authors = {}, {}
    for id in ids:gmatch("%S+") do
      table.insert(stories, id)
    end
    for id in author_ids:gmatch("%S+") do
      table.insert(authors, id)
    end
    if #stories > 0 then
      table.insert(users, { auth = "Bearer " .. token, stories = stories, authors = authors })
    end
  end
  assert(#users > 0, "no user with a visible story in " .. path)
end

function init(args)
  load_users(args[1])
  scenario = args[2] or scenario
  progress_path = args[3]
  math.randomseed(os.time() * 1000 + thread_id)
end

local function json_headers(user)
  return { ["Authorization"] = user.auth, ["Content-Type"] = "application/json" }
end

local function any_story(user)
  return user.stories[math.random(#user.stories)]
end

local builders = {
  feed = function(user)
    return wrk.format("GET", "/feed?limit=20", { ["Authorization"] = user.auth })
  end,
  tray = function(user)
    return wrk.format("GET", "/tray?limit=20", { ["Authorization"] = user.auth })
  end,
  author_stories = function(user)
    local author = user.authors[math.random(#user.authors)]
    return wrk.format("GET", "/users/" .. author .. "/stories", { ["Authorization"] = user.auth })
  end,
  story_get = function(user)
    return wrk.format("GET", "/stories/" .. any_story(user), { ["Authorization"] = user.auth })
  end,
  view = function(user)
    return wrk.format("POST", "/stories/" .. any_story(user) .. "/view", { ["Authorization"] = user.auth })
  end,
  react = function(user)
    local body = '{"emoji": "' .. EMOJIS[math.random(#EMOJIS)] .. '"}'
    return wrk.format("POST", "/stories/" .. any_story(user) .. "/reactions", json_headers(user), body)
  end,
  create = function(user)
    created = created + 1
    local visibility = (created % 2 == 0) and "public" or "friends"
    local body = string.format('{"text": "bench story %d-%d", "visibility": "%s"}', thread_id, created, visibility)
    return wrk.format("POST", "/stories", json_headers(user), body)
  end,
}

local function mixed_kind()
  local roll = math.random(100)
  for _, step in ipairs(MIX) do
    if roll <= step[1] then
      return step[2]
    end
  end
end

function request()
  local user = users[math.random(#users)]
  local kind = scenario
  if kind == "mixed" then
    kind = mixed_kind()
  end
  return builders[kind](user)
end

local function write_progress()
  local path = progress_path .. "." .. thread_id
  local file = io.open(path .. ".tmp", "w")
  if file then
    file:write(tostring(responses))
    file:close()
    os.rename(path .. ".tmp", path) -- a reader never sees a half-written count
  end
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  responses = responses + 1
  if progress_path and os.time() ~= progress_written then
    progress_written = os.time()
    write_progress()
  end
end

local function merged_statuses()
  local merged = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      merged[status] = (merged[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(merged) do
    table.insert(parts, string.format('"%d": %d', status, count))
  end
  return "{" .. table.concat(parts, ", ") .. "}"
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, '
      .. '"statuses": %s, "socket_errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, merged_statuses(),
    errors.connect, errors.read, errors.write, errors.timeout
  ))
end
