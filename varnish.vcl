vcl 4.1;

# Varnish in front of shapesync: the same shared cache as nginx.conf (README, "Behind nginx
# or a CDN"), for deployments where live changes must reach collapsed long-poll clients at
# once. Varnish puts requests for an answer being fetched on a waiting list and wakes them
# when it arrives; nginx's cache lock wakes its waiters every 500 ms.
#
#   varnishd -a :3002 -f /path/to/varnish.vcl -s malloc,1G
#
# Many long-poll clients of few shapes, few SSE streams: every worker thread woken for a change
# costs CPU, and Varnish's default pools grow to thousands of threads. Fewer threads answer
# thousands of collapsed clients sooner (measured in README, "Behind nginx or a CDN"), and a
# longer idle timeout keeps their kept-alive connections while they queue. Add:
#
#   -p thread_pools=1 -p thread_pool_min=16 -p thread_pool_max=16 -p thread_queue_limit=100000 -p timeout_idle=60
#
# But each open SSE stream (passed through) holds a thread for its whole life: set
# thread_pool_max above the number of SSE streams you expect, or keep the defaults.
#
# The test suite runs this very file (tests/tests/cdn.rs replaces only the address marked
# below).

backend shapesync {
    # The proxy (the one address to change).
    .host = "shapesync"; .port = "3000";
    # Longer than a long-poll (--long-poll-timeout, 20 s) and an SSE stream (--sse-timeout,
    # 60 s).
    .first_byte_timeout = 90s;
    .between_bytes_timeout = 90s;
}

sub vcl_recv {
    # Only `GET /v1/shape` is cached; mutations, subsets, the RxDB and WatermelonDB
    # endpoints, /v1/lsn, health and metrics pass through.
    if ((req.method != "GET" && req.method != "HEAD") || req.url !~ "^/v1/shape(\?|$)") {
        return (pass);
    }
    # Server-sent events: one client's stream, passed through as it comes.
    if (req.url ~ "[?&](experimental_)?live_sse=true") {
        return (pass);
    }
    # Cached even with a token, because the token is part of the key (vcl_hash).
    return (hash);
}

sub vcl_hash {
    # The whole request URL and the caller's token: an answer made for one token is never
    # served to a request without it. Answers of shapes that depend on the token's claims
    # are `private` and not stored at all (Varnish's built-in rule).
    hash_data(req.url);
    if (req.http.Authorization) {
        hash_data(req.http.Authorization);
    }
    return (lookup);
}

sub vcl_backend_response {
    # SSE: never stored, streamed.
    if (beresp.http.Content-Type ~ "^text/event-stream") {
        set beresp.uncacheable = true;
        set beresp.do_stream = true;
        return (deliver);
    }
    # A live answer is a few hundred bytes: store it plain, unzipped once here, rather than
    # unzipped again for each of the thousands of collapsed clients that do not ask for gzip.
    if (bereq.url ~ "[?&]live=true" && beresp.http.Content-Encoding == "gzip") {
        set beresp.do_gunzip = true;
    }
    # shapesync's cache-control decides how long (max-age, stale-while-revalidate → grace);
    # errors and 409s are `no-store`.
}

sub vcl_deliver {
    # The header Electric's cache tests read.
    if (req.url ~ "[?&](experimental_)?live_sse=true" || req.method != "GET") {
        set resp.http.X-Proxy-Cache = "BYPASS";
    } elsif (obj.hits > 0 && obj.ttl < 0s) {
        set resp.http.X-Proxy-Cache = "STALE";
    } elsif (obj.hits > 0) {
        set resp.http.X-Proxy-Cache = "HIT";
    } else {
        set resp.http.X-Proxy-Cache = "MISS";
    }
}
