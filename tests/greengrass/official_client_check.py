"""Drives AWS's own Greengrass IPC client (awsiotsdk) against greengrass-emulator.

Usage: official_client_check.py EMULATOR_BIN RECIPE_JSON WORKDIR

Starts the emulator with the recipe and a token, then checks with the official client:
connect, publish (payload bytes round trip, recorded), a denied publish (typed
UnauthorizedError), configuration get / subscribe / update event / get after the update,
subscription close, a refused token. Prints one line per check and "N passed, M failed";
exits non-zero on any failure.
"""
import base64
import json
import os
import subprocess
import sys
import threading
import time

from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc import model
import awsiot.greengrasscoreipc

TOKEN = "CONFORMANCETOKEN"
THING = "gg-conformance"

results = []


def check(name, fn):
    try:
        fn()
        results.append((name, None))
        print(f"ok   {name}", flush=True)
    except Exception as e:  # report every failure, keep going
        results.append((name, e))
        print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)


def main():
    emulator_bin, recipe, work = sys.argv[1], sys.argv[2], sys.argv[3]
    socket = os.path.join(work, "ipc.socket")
    record = os.path.join(work, "publishes.jsonl")
    emu = subprocess.Popen(
        [emulator_bin, "--socket", socket, "--record", record, "--recipe", recipe, "--svcuid", TOKEN],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        line = emu.stdout.readline()
        assert line.startswith("listening"), f"emulator did not start: {line!r}"

        def command(obj):
            emu.stdin.write(json.dumps(obj) + "\n")
            emu.stdin.flush()
            return json.loads(emu.stdout.readline())

        def refused_token():
            # The emulator closes 200 ms after a refused CONNECT_ACK, so the client reports
            # AccessDeniedError (an immediate close would only show as a closed socket).
            try:
                conn = awsiot.greengrasscoreipc.connect(ipc_socket=socket, authtoken="WRONGTOKEN")
            except Exception as e:
                assert "AccessDenied" in type(e).__name__, repr(e)
                return
            conn.close()
            raise AssertionError("a wrong token connected")

        check("refused token is not connected", refused_token)

        os.environ["AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"] = socket
        os.environ["SVCUID"] = TOKEN
        client = None

        def connect():
            nonlocal client
            client = GreengrassCoreIPCClientV2()

        check("connect with the environment's socket and SVCUID", connect)
        if client is None:
            return

        topic = f"$aws/things/{THING}/defender/metrics/json"
        payload = bytes(range(256)) * 4

        def update_state():
            client.update_state(state=model.ReportedLifecycleState.RUNNING)
            assert command("stats")["states"] == ["RUNNING"]

        check("UpdateState RUNNING", update_state)

        answers = []
        answered = threading.Event()

        def on_answer(ev):
            answers.append((ev.message.topic_name, ev.message.payload))
            answered.set()

        def subscribe_answers():
            client.subscribe_to_iot_core(topic_name=topic + "/rejected", qos=model.QOS.AT_LEAST_ONCE, on_stream_event=on_answer)

        check("SubscribeToIoTCore on the Defender rejected topic", subscribe_answers)

        def publish():
            client.publish_to_iot_core(topic_name=topic, qos=model.QOS.AT_LEAST_ONCE, payload=payload)
            with open(record) as f:
                rec = [json.loads(l) for l in f if l.strip()]
            assert rec, "nothing recorded"
            last = rec[-1]
            assert last["topic"] == topic, last
            assert last["qos"] == "1", last
            assert base64.b64decode(last["payload"]) == payload, "payload bytes changed"

        check("PublishToIoTCore QoS 1, payload bytes round trip", publish)

        def rejected_answer():
            # The payload is no Device Defender report: the emulator's Defender rejects it.
            assert answered.wait(5), "no IoTCoreMessage within 5 s"
            t, body = answers[0]
            assert t == topic + "/rejected", t
            doc = json.loads(body)
            assert doc["status"] == "REJECTED", doc
            assert doc["statusDetails"]["ErrorCode"] == "InvalidPayload", doc

        check("Device Defender answer delivered as IoTCoreMessage", rejected_answer)

        def denied():
            try:
                client.publish_to_iot_core(topic_name=f"$aws/things/{THING}/shadow/update", qos=model.QOS.AT_LEAST_ONCE, payload=b"{}")
            except model.UnauthorizedError as e:
                assert "not authorized" in (e.message or ""), e.message
                return
            raise AssertionError("a publish outside accessControl succeeded")

        check("publish outside accessControl gets UnauthorizedError", denied)

        def get_config():
            r = client.get_configuration(key_path=["report"])
            assert r.component_name == "com.edgewarden.Agent", r.component_name
            assert r.value == {"interval": "300s", "format": "json"}, r.value
            r = client.get_configuration(key_path=["report", "interval"])
            assert r.value == {"interval": "300s"}, r.value

        check("GetConfiguration (container and leaf)", get_config)

        events = []
        got = threading.Event()

        def on_event(ev):
            events.append(ev.configuration_update_event.key_path)
            got.set()

        op = None

        def subscribe():
            nonlocal op
            _, op = client.subscribe_to_configuration_update(key_path=["report"], on_stream_event=on_event)

        check("SubscribeToConfigurationUpdate", subscribe)

        def update():
            changed = command({"config": {"report": {"interval": "600s"}}})
            assert changed == {"changed": [["report", "interval"]]}, changed
            assert got.wait(5), "no ConfigurationUpdateEvents within 5 s"
            assert events == [["report", "interval"]], events
            r = client.get_configuration(key_path=["report", "interval"])
            assert r.value == {"interval": "600s"}, r.value

        check("configuration update event, then GetConfiguration sees it", update)

        def close_subscription():
            op.close().result(5)
            time.sleep(0.3)
            before = len(events)
            command({"config": {"report": {"interval": "900s"}}})
            time.sleep(0.5)
            assert len(events) == before, "an event arrived after the subscription was closed"

        if op is not None:
            check("closed subscription gets no more events", close_subscription)

        def still_usable():
            client.publish_to_iot_core(topic_name=f"edgewarden/{THING}/violations", qos=model.QOS.AT_MOST_ONCE, payload=b"{}")
            stats = command("stats")
            assert stats["published"] == 2, stats
            assert stats["denied"] == 1, stats

        check("connection usable after the errors", still_usable)
        client.close()
    finally:
        emu.terminate()
        try:
            emu.wait(5)
        except subprocess.TimeoutExpired:
            emu.kill()


if __name__ == "__main__":
    main()
    failed = sum(1 for _, e in results if e is not None)
    print(f"{len(results) - failed} passed, {failed} failed")
    sys.exit(1 if failed or not results else 0)
