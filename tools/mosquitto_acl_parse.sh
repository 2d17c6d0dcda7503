#!/bin/bash
# Mosquitto 2.0.11 start-up time with N per-device ACL sections (the bridge's format, 8 lines each) and N passwd lines.
# Usage: tools/mosquitto_acl_parse.sh, SIZES="5000 10000" to choose (needs mosquitto and python3; port 39998 free). docs/BENCHMARKS.md "The topology past one broker".
D=$(mktemp -d)/acl; export D
# Mosquitto started as root reads its files as its own user.
chmod 755 "$(dirname "$D")"
trap 'rm -rf "$(dirname "$D")"' EXIT
for n in ${SIZES:-2500 5000 10000 20000}; do
  python3 - $n <<'PY'
import sys
n=int(sys.argv[1])
import os
d=os.environ['D']
with open(d+'.acl','w') as a, open(d+'.passwd','w') as p:
    for i in range(n):
        d=f"topo-{i:06d}"
        a.write(f"user {d}\n")
        for t in ["hello","presence","request","status"]: a.write(f"topic write ota/v1/devices/{d}/{t}\n")
        for t in ["groups","ack","blocks"]: a.write(f"topic read ota/v1/devices/{d}/{t}\n")
        a.write("topic read ota/v1/emergency\n\n")
        p.write(f"{d}:$6$c2FsdHNhbHRzYWx0$"+"A"*86+"==\n")
PY
  printf "per_listener_settings true\nlistener 39998 127.0.0.1\nallow_anonymous false\npassword_file $D.passwd\nacl_file $D.acl\n" > $D.conf
  s=$(date +%s.%N); mosquitto -c $D.conf >/dev/null 2>&1 & pid=$!
  while ! (echo > /dev/tcp/127.0.0.1/39998) 2>/dev/null; do sleep 0.02; done
  e=$(date +%s.%N); echo "$n devices: $(stat -c %s $D.acl) bytes acl, start-up $(echo "$e - $s" | bc) s"; kill $pid; wait $pid 2>/dev/null
done
