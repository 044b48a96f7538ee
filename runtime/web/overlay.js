// KeyframeFace overlay: draws a 2D face from the 61 ARKit channels streamed on /ws.
// Frames arrive in binary (256 bytes + avatar name: u32 seq, f64 t, 61 x f32); the newest one is
// drawn on each animation frame. window.overlay exposes counters for tests and debugging.
"use strict";
(() => {
  const params = new URLSearchParams(location.search);
  const token = params.get("token");
  let avatar = params.get("avatar");
  if (params.get("controls") === "0") document.body.classList.add("nocontrols");

  const $ = (id) => document.getElementById(id);
  const st = { frames: 0, renders: 0, seq: -1, values: new Float32Array(61), events: [],
               connected: false, avatar: null, fresh: false };
  window.overlay = st;
  let idx = {};  // channel name -> index, from the server's hello
  let ws = null;
  let backoff = 250;

  const v = (name) => { const i = idx[name]; return i === undefined ? 0 : st.values[i]; };
  const both = (name) => 0.5 * (v(name + "Left") + v(name + "Right"));
  const f = (x) => x.toFixed(2);

  function draw() {
    // head: roll rotates, yaw and pitch slide the face (channels are degrees / 180)
    const yaw = v("HeadYaw") * 180, pitch = v("HeadPitch") * 180, roll = v("HeadRoll") * 180;
    $("head").setAttribute("transform",
      `translate(${f(-yaw * 2.2)} ${f(pitch * 2.2)}) rotate(${f(-roll)} 200 220)`);
    const puff = v("CheekPuff");
    $("skin").setAttribute("rx", f(150 + 14 * puff));
    for (const s of ["Left", "Right"]) {
      // the subject's left eye is on the viewer's right
      const L = s === "Left", side = L ? "L" : "R", cx = L ? 260 : 140;
      // eyelids: blink closes, squint narrows, wide opens
      const open = Math.max(0, 1 - v("EyeBlink" + s)) * (1 + 0.45 * v("EyeWide" + s))
        * (1 - 0.35 * v("EyeSquint" + s));
      const ry = 20 * open;
      for (const id of [`eye${side}-white`, `clip${side}-e`]) $(id).setAttribute("ry", f(Math.max(ry, 0.01)));
      // gaze: look in/out/up/down (blendshapes) plus eye yaw/pitch
      const outward = v("EyeLookOut" + s) - v("EyeLookIn" + s);
      const gx = (L ? 1 : -1) * outward * 12 + v((L ? "LeftEye" : "RightEye") + "Yaw") * 180 * 0.25;
      const gy = (v("EyeLookDown" + s) - v("EyeLookUp" + s)) * 10 + v((L ? "LeftEye" : "RightEye") + "Pitch") * 180 * 0.2;
      for (const id of [`iris${side}`, `pupil${side}`]) {
        $(id).setAttribute("cx", f(cx + gx));
        $(id).setAttribute("cy", f(190 + gy));
      }
      // brows: inner up (shared), outer up per side, down per side
      const dir = L ? -1 : 1;  // towards the nose
      const inner = 150 - 22 * v("BrowInnerUp") + 14 * v("BrowDown" + s);
      const outer = 150 - 22 * v("BrowOuterUp" + s) + 6 * v("BrowDown" + s);
      const xi = cx + dir * 30, xo = cx - dir * 38;
      $("brow" + side).setAttribute("d",
        `M${f(xo)} ${f(outer)} Q${f(cx)} ${f(Math.min(inner, outer) - 8)} ${f(xi)} ${f(inner)}`);
      $("cheek" + side).setAttribute("opacity", f(Math.min(1, 0.7 * v("CheekSquint" + s) + 0.4 * puff)));
    }
    // mouth: corners from smile/frown/stretch/dimple, width from pucker/funnel, opening from the jaw
    const smileL = v("MouthSmileLeft"), smileR = v("MouthSmileRight");
    const frownL = v("MouthFrownLeft"), frownR = v("MouthFrownRight");
    const pucker = v("MouthPucker"), funnel = v("MouthFunnel"), press = both("MouthPress");
    const width = 62 * (1 + 0.3 * (smileL + smileR) / 2 + 0.25 * both("MouthStretch")
      + 0.1 * both("MouthDimple") - 0.5 * pucker - 0.3 * funnel);
    const shift = 30 * (v("MouthLeft") - v("MouthRight")) + 10 * (v("JawLeft") - v("JawRight"));
    const mx = 200 + shift, my = 320;
    const xl = mx - width, xr = mx + width;
    // xl/yl is the corner on the viewer's left: the subject's right
    const yl = my - 26 * smileR + 20 * frownR, yr = my - 26 * smileL + 20 * frownL;
    const jaw = v("JawOpen") * (1 - 0.8 * v("MouthClose"));
    const lipGap = Math.max(0, jaw * 70 + 10 * both("MouthLowerDown") + 18 * funnel - 6 * press);
    const upper = my - 4 - 10 * both("MouthUpperUp") - 6 * funnel + 2 * press;
    const lower = my + 4 + lipGap - 4 * both("MouthRollLower") - 2 * press;
    // the lips' middle sags with a smile less than the corners rise: a curve through the centre
    const smileMid = 12 * (smileL + smileR) / 2, frownMid = 8 * (frownL + frownR) / 2;
    const uy = upper + smileMid * 0.4 - frownMid;
    const ly = lower + smileMid - frownMid * 0.3;
    const d = `M${f(xl)} ${f(yl)} Q${f(mx)} ${f(2 * uy - (yl + yr) / 2)} ${f(xr)} ${f(yr)} `
      + `Q${f(mx)} ${f(2 * ly - (yl + yr) / 2)} ${f(xl)} ${f(yl)} Z`;
    $("mouth").setAttribute("d", d);
    $("mouth").setAttribute("stroke-width", f(6 * (1 - 0.5 * press) + 3 * pucker));
    const teeth = lipGap > 6 ? `M${f(mx - width * 0.55)} ${f(uy + 4)} L${f(mx + width * 0.55)} ${f(uy + 4)} `
      + `L${f(mx + width * 0.5)} ${f(uy + 4 + Math.min(9, lipGap * 0.3))} L${f(mx - width * 0.5)} `
      + `${f(uy + 4 + Math.min(9, lipGap * 0.3))} Z` : "";
    $("teeth").setAttribute("d", teeth);
  }

  function frame() {
    if (st.fresh) {
      st.fresh = false;
      draw();
      st.renders += 1;
    }
    requestAnimationFrame(frame);
  }

  function send(obj) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj));
  }

  function connect() {
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`
      + (token ? `?token=${encodeURIComponent(token)}` : "");
    ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => { backoff = 250; };
    ws.onmessage = (ev) => {
      if (typeof ev.data !== "string") {
        const buf = ev.data;
        if (buf.byteLength < 256) return;
        st.seq = new DataView(buf).getUint32(0, true);
        st.values.set(new Float32Array(buf, 12, 61));
        st.frames += 1;
        st.fresh = true;
        return;
      }
      const msg = JSON.parse(ev.data);
      if (msg.type === "hello") {
        idx = {};
        msg.channels.forEach((n, i) => { idx[n] = i; });
        avatar = avatar && msg.avatars.includes(avatar) ? avatar : msg.avatars[0];
        st.avatar = avatar;
        st.connected = true;
        send({ type: "subscribe", frames: "binary", avatar });
        $("status").textContent = avatar;
      } else if (msg.type !== "keyframe") {
        st.events.push(msg);
        if (st.events.length > 100) st.events.shift();
        if (msg.type === "error") $("status").textContent = msg.message.slice(0, 60);
        else if (msg.type === "done") $("status").textContent = avatar;
        else if (msg.type === "ack") $("status").textContent = "…";
      }
    };
    ws.onclose = () => {
      st.connected = false;
      $("status").textContent = "reconnecting";
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 5000);
    };
  }

  $("controls").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = $("text").value.trim();
    if (!text) return;
    const msg = { type: "say", text, avatar };
    const emotion = $("emotion").value.trim();
    if (emotion) msg.emotion = emotion;
    send(msg);
    $("text").value = "";
  });
  $("stop").addEventListener("click", () => send({ type: "interrupt", avatar }));

  draw();
  requestAnimationFrame(frame);
  connect();
})();
