"use strict";
// Audio for the console's test calls, in the audio rendering thread.
//
// web-call-capture: microphone samples at the context's rate -> 8 kHz (each output sample the
// mean of the input samples it spans, a box low-pass against aliasing) -> G.711 mu-law, posted
// to the page in 160-byte (20 ms) frames.
// web-call-playback: the agent's 8 kHz mu-law audio queued in order, played at the context's
// rate (linear interpolation); a mark is posted back once the audio queued before it has
// played; `clear` drops the queue and posts back the pending marks, as Twilio does.

const FRAME = 160;
const RATE = 8000;

function muLawEncode(sample) {
  const BIAS = 0x84, CLIP = 32635;
  let s = Math.max(-1, Math.min(1, sample)) * 32767;
  const sign = s < 0 ? 0x80 : 0;
  if (sign) s = -s;
  s = Math.min(CLIP, s) + BIAS;
  let exponent = 7;
  for (let mask = 0x4000; (s & mask) === 0 && exponent > 0; mask >>= 1) exponent--;
  const mantissa = (s >> (exponent + 3)) & 0x0f;
  return ~(sign | (exponent << 4) | mantissa) & 0xff;
}

function muLawDecode(byte) {
  const u = ~byte & 0xff;
  const sign = u & 0x80, exponent = (u >> 4) & 0x07, mantissa = u & 0x0f;
  const magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
  return (sign ? -magnitude : magnitude) / 32768;
}

class Capture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / RATE; // input samples per output sample
    this.acc = 0; this.count = 0; this.pos = 0;
    this.frame = new Uint8Array(FRAME); this.filled = 0;
  }
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    for (let i = 0; i < channel.length; i++) {
      this.acc += channel[i]; this.count++; this.pos++;
      if (this.pos >= this.step) {
        this.pos -= this.step;
        this.frame[this.filled++] = muLawEncode(this.acc / this.count);
        this.acc = 0; this.count = 0;
        if (this.filled === FRAME) {
          this.port.postMessage(this.frame.slice());
          this.filled = 0;
        }
      }
    }
    return true;
  }
}

class Playback extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = RATE / sampleRate; // 8 kHz samples per output sample
    this.queue = []; // {samples: Float32Array} | {mark: name}
    this.pos = 0; // position in the head chunk, in 8 kHz samples
    this.port.onmessage = (e) => {
      const m = e.data;
      if (m.type === "audio") {
        const samples = new Float32Array(m.bytes.length);
        for (let i = 0; i < m.bytes.length; i++) samples[i] = muLawDecode(m.bytes[i]);
        this.queue.push({ samples });
      } else if (m.type === "mark") {
        this.queue.push({ mark: m.name });
      } else if (m.type === "clear") {
        for (const item of this.queue) if (item.mark !== undefined) this.port.postMessage({ played: item.mark });
        this.queue = []; this.pos = 0;
      }
    };
  }
  // Marks at the head of the queue have played: everything before them has.
  popMarks() {
    while (this.queue.length && this.queue[0].mark !== undefined) {
      this.port.postMessage({ played: this.queue.shift().mark });
    }
  }
  process(_inputs, outputs) {
    const out = outputs[0][0];
    this.popMarks();
    for (let i = 0; i < out.length; i++) {
      const head = this.queue[0];
      if (!head) { out[i] = 0; continue; }
      const k = Math.floor(this.pos), frac = this.pos - k;
      const a = head.samples[k], b = k + 1 < head.samples.length ? head.samples[k + 1] : a;
      out[i] = a + (b - a) * frac;
      this.pos += this.step;
      if (this.pos >= head.samples.length) {
        this.pos -= head.samples.length;
        this.queue.shift();
        this.popMarks();
      }
    }
    return true;
  }
}

registerProcessor("web-call-capture", Capture);
registerProcessor("web-call-playback", Playback);
