-- wrk script: spreads requests over product ids (when PRODUCT_IDS="lo-hi" is set) and
-- prints one JSON line with the figures the benchmark needs.
local lo, hi = nil, nil
local path = nil

-- READ_PAUSE_MS paces each connection like a browsing shopper (a pause after every
-- answer), so the reads measure waiting, not a share of a saturated CPU. Defined only
-- when set: wrk asks every request for its delay when the function exists.
local pause = tonumber(os.getenv("READ_PAUSE_MS") or "0")
if pause > 0 then
  function delay()
    return pause
  end
end

function init(args)
  path = args[1] or "/"
  local range = os.getenv("PRODUCT_IDS")
  if range then
    local a, b = range:match("(%d+)-(%d+)")
    lo, hi = tonumber(a), tonumber(b)
  end
  math.randomseed(os.time() + (tonumber(tostring({}):match("0x(%x+)"), 16) or 0) % 1000)
end

function request()
  if lo then
    return wrk.format("GET", string.format("/api/products/%d", math.random(lo, hi)))
  end
  return wrk.format("GET", path)
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "rps": %.1f, "p50_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f, "errors": %d}\n',
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000, errors))
end
