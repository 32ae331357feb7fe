"""/metrics as Prometheus's own client library parses it (Debian's
python3-prometheus-client): every family typed, each once, HTTP totals that
sum() to the truth across workers, and families for every protocol."""
import shutil
import socket
import subprocess

import pytest

from harness import Server, curl, free_port, site, temp_dir

prom = pytest.importorskip("prometheus_client.parser",
                           reason="python3-prometheus-client (packaging/bootstrap)")


def test_metrics_parse_typed_once_and_sum_right():
    tmp = temp_dir()
    vhost = site(tmp).replace('handlers = (', 'handlers = ( { type = "status"; path = "/status"; },')
    port, chat, echo, ftp = free_port(), free_port(), free_port(), free_port()
    conf = ('http = ( { name = "web"; listen = [ "127.0.0.1:%d" ]; vhosts = ( %s ); } );\n'
            'chat = ( { name = "chat"; listen = [ "127.0.0.1:%d" ]; } );\n'
            'echo = ( { name = "echo"; listen = [ "127.0.0.1:%d" ]; } );\n'
            'ftp = ( { name = "files"; listen = [ "127.0.0.1:%d" ]; root = "www"; anonymous = true; } );\n'
            'upstreams = ( { name = "app"; servers = [ "127.0.0.1:%d" ]; } );\n'
            % (port, vhost, chat, echo, ftp, port))
    s = Server(conf, dir=tmp, workers=3)
    try:
        n = 30
        for _ in range(n):  # new connections: spread over the workers
            assert curl("http://127.0.0.1:%d/" % port)[0] == 200
        assert curl("http://127.0.0.1:%d/missing" % port)[0] == 404
        with socket.create_connection(("127.0.0.1", echo)) as e:
            e.sendall(b"hi\n")
            assert e.recv(10) == b"hi\n"
        st, h, body = curl("http://127.0.0.1:%d/metrics" % port)[:3]
        assert st == 200
        text = body.decode()
        families = list(prom.text_string_to_metric_families(text))
        names = [f.name for f in families]
        assert len(names) == len(set(names)), "a family appears twice"
        untyped = [f.name for f in families if f.type == "unknown"]
        assert not untyped, untyped
        by = {f.name: f for f in families}
        if shutil.which("promtool"):  # Debian's prometheus package, when installed
            lint = subprocess.run(["promtool", "check", "metrics"], input=body,
                                  capture_output=True)
            assert lint.returncode == 0 and not lint.stdout.strip(), lint
        # totals only: sum() over every series of the family is the truth
        ok = sum(smp.value for smp in by["medusa_http_responses"].samples
                 if smp.name == "medusa_http_responses_total" and smp.labels["class"] == "2xx")
        assert ok == n, ok
        assert sum(smp.value for smp in by["medusa_http_responses"].samples
                   if smp.labels.get("class") == "4xx") == 1
        assert by["medusa_http_requests"].type == "counter"
        assert by["medusa_http_connections_active"].type == "gauge"
        workers = {smp.labels["worker"] for smp in by["medusa_worker_connections_active"].samples}
        assert workers == {"1", "2", "3"}
        for fam in ("medusa_chat_room_users", "medusa_chat_sessions_active", "medusa_echo_connections_active",
                    "medusa_echo_bytes_echoed", "medusa_ftp_sessions", "medusa_upstream_up"):
            assert fam in by, (fam, sorted(by))
        assert by["medusa_echo_bytes_echoed"].samples[0].value == 3
        assert by["medusa_chat_room_users"].type == "gauge"
        # the status page: every protocol in a table, human units, refresh on request
        st, h, body = curl("http://127.0.0.1:%d/status?refresh=5" % port)[:3]
        page = body.decode()
        assert st == 200 and '<meta http-equiv="refresh" content="5">' in page
        for section in ("<h2>Workers</h2>", "<h2>HTTP</h2>", "<h2>Upstreams</h2>", "<h2>chat</h2>",
                        "<h2>echo</h2>", "<h2>ftp</h2>"):
            assert section in page, section
        assert "<th>bytes echoed</th>" in page and 'title="3 bytes">3 B<' in page
        assert " KiB<" in page and "refresh" in page
        assert "http-equiv" not in curl("http://127.0.0.1:%d/status" % port)[2].decode()
    finally:
        s.stop()
