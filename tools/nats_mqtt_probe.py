#!/usr/bin/env python3
# A probe of an MQTT broker cluster for docs/scaling.md (issue 19): a raw
# MQTT 3.1.1 client (no library). `retained N WAIT`: publish one retained QoS 1
# announcement on port 18821, connect N clients spread over ports 18821-18823,
# each subscribing to the 4 filters a device has, count who got it.
# Run against 3 nats-server nodes (cluster, JetStream, `mqtt { listen }` on
# 18821-18823), as in docs/BENCHMARKS.md "The topology past one broker".
import socket, struct, sys, time
def enc_len(n):
    out=b''
    while True:
        b=n%128; n//=128
        out+=bytes([b|(0x80 if n else 0)])
        if not n: return out
def s(x): x=x.encode() if isinstance(x,str) else x; return struct.pack('>H',len(x))+x
def pkt(t,body): return bytes([t])+enc_len(len(body))+body
def connect(port,cid):
    c=socket.create_connection(('127.0.0.1',port)); c.settimeout(10)
    c.sendall(pkt(0x10, s('MQTT')+bytes([4,2])+struct.pack('>H',60)+s(cid)))
    return c
def read(c):
    h=c.recv(1)
    if not h: return None,None
    mult=1;n=0
    while True:
        b=c.recv(1)[0]; n+=(b&127)*mult; mult*=128
        if not b&128: break
    body=b''
    while len(body)<n: body+=c.recv(n-len(body))
    return h[0],body
def sub(c,topics,pid=1):
    c.sendall(pkt(0x82, struct.pack('>H',pid)+b''.join(s(t)+b'\x01' for t in topics)))
def pub(c,t,m,retain=True,pid=7):
    c.sendall(pkt(0x30|0x02|(1 if retain else 0), s(t)+struct.pack('>H',pid)+m))
mode=sys.argv[1]
if mode=='retained':
    p=connect(18821,'pub'); read(p); pub(p,'ota/v1/groups/g/campaign',b'announce'); print('puback', read(p)[0]==0x40)
    t0=time.time(); got=0; n=int(sys.argv[2])
    cs=[]
    for i in range(n):
        c=connect(18821+i%3,'dev%d'%i); read(c); sub(c,['ota/v1/groups/g/campaign','ota/v1/devices/dev%d/ack'%i,'ota/v1/devices/dev%d/groups'%i,'ota/v1/artifacts/+/blocks']); cs.append(c)
    for c in cs:
        while True:
            try: t,b=read(c)
            except Exception: t=None
            if t is None: break
            if t>>4==3: got+=1; break
    print('subscribers',n,'got retained',got,'in %.1fs'%(time.time()-t0))
    input_wait=float(sys.argv[3]) if len(sys.argv)>3 else 0
    time.sleep(input_wait)
