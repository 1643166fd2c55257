// Host tool (never shipped): runs a module of the compiled app on MicroPython's WebAssembly
// port under Node.js, a 32-bit interpreter, so heap figures have the object sizes of an ESP32
// or Pico W. The app is imported from a ROMFS image (bytecode in place, outside the heap, as on
// a board with ROMFS); the I/O the firmware needs is the JS module `wasmhost` below, used by
// firmware/boards/wasm.py. It must not grow logic of its own: bytes in, bytes out.
//
//   node firmware/run_wasm.mjs --image APP.romfs [--heap 512K] [--put HOST=PATH]...
//                              [--ram] MODULE [ARGS...]
//
// imports MODULE with sys.argv == [MODULE, ARGS...]; --put copies a host file into the port's
// in-memory filesystem first. With --ram, MODULE and ARGS are modules imported one after the
// other, and one JSON line tells the heap held after each (firmware.build.ram_report's form).
// The npm package @micropython/micropython-webassembly-pyscript 1.29.0-6 comes from
// MPWASM_PACKAGE (its folder) or .cache/mpwasm (scripts/bootstrap.sh installs it there);
// firmware/wasmrun.py builds this command line from Python.

import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const PACKAGE =
  process.env.MPWASM_PACKAGE ||
  path.join(ROOT, ".cache/mpwasm/node_modules/@micropython/micropython-webassembly-pyscript");

function usage(message) {
  process.stderr.write(`run_wasm: ${message}\nusage: node firmware/run_wasm.mjs --image ` +
    "APP.romfs [--heap 512K] [--put HOST=PATH]... [--ram] MODULE [ARGS...]\n");
  process.exit(2);
}

function parseArgs(argv) {
  const a = { image: null, heap: 512 * 1024, puts: [], ram: false, module: null, args: [] };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (a.module === null && arg === "--image") a.image = argv[++i];
    else if (a.module === null && arg === "--heap") a.heap = parseSize(argv[++i]);
    else if (a.module === null && arg === "--put") a.puts.push(argv[++i]);
    else if (a.module === null && arg === "--ram") a.ram = true;
    else if (a.module === null) a.module = arg;
    else a.args.push(arg);
  }
  if (!a.image || !a.module) usage("--image and MODULE are required");
  return a;
}

function parseSize(text) {
  const m = /^(\d+)([kKmM]?)$/.exec(text || "");
  if (!m) usage(`bad size ${text}`);
  return Number(m[1]) * { "": 1, k: 1024, m: 1024 * 1024 }[m[2].toLowerCase()];
}

// The JS side of firmware/boards/wasm.py. Addresses are offsets into the wasm memory (where the
// Python buffers live): data moves without a copy in the MicroPython heap. Nothing here throws
// into Python: failures come back as return values the board turns into OSError.
function makeHost(heap, liveHeap) {
  const conns = new Map();
  let nextId = 1;
  return {
    exit(code) {
      process.exit(code);
    },
    live_heap() {
      return liveHeap();
    },
    uart_open(port) {
      const c = fs.constants;
      try {
        return fs.openSync(port, c.O_RDWR | c.O_NOCTTY | c.O_NONBLOCK);
      } catch (e) {
        return e.code || String(e);
      }
    },
    uart_read(fd, addr, n) {
      try {
        return fs.readSync(fd, heap(), addr, n, null);
      } catch (e) {
        return e.code === "EAGAIN" ? 0 : -1;
      }
    },
    uart_write(fd, addr, n) {
      // A full PTY buffer clears within microseconds (hw_sim reads it all the time).
      let off = 0;
      const deadline = Date.now() + 200;
      while (off < n) {
        try {
          off += fs.writeSync(fd, heap(), addr + off, n - off);
        } catch (e) {
          if (e.code !== "EAGAIN" || Date.now() > deadline) return -1;
        }
      }
      return off;
    },
    uart_close(fd) {
      try {
        fs.closeSync(fd);
      } catch {
        // already gone
      }
    },
    // TCP: state 0 connecting, 1 open, 2 closed; wake(0) on data/connect/close, wake(1) once
    // Node's send buffer is empty (and on close).
    tcp_open(host, port, wake) {
      const id = nextId++;
      const c = { chunks: [], off: 0, state: 0, error: null, wake };
      const poke = (what) => {
        if (c.wake) c.wake(what);
      };
      c.sock = net.connect({ host, port });
      c.sock.setNoDelay(true);
      c.sock.on("connect", () => {
        c.state = 1;
        poke(0);
      });
      c.sock.on("data", (d) => {
        c.chunks.push(d);
        poke(0);
      });
      c.sock.on("drain", () => poke(1));
      c.sock.on("error", (e) => {
        c.error = e.code || e.message;
      });
      c.sock.on("close", () => {
        c.state = 2;
        poke(0);
        poke(1);
      });
      conns.set(id, c);
      return id;
    },
    tcp_state(id) {
      const c = conns.get(id);
      return c ? c.state : 2;
    },
    tcp_error(id) {
      const c = conns.get(id);
      return (c && c.error) || null;
    },
    tcp_read(id, addr, n) {
      const c = conns.get(id);
      if (!c) return -1;
      let got = 0;
      const mem = heap();
      while (got < n && c.chunks.length) {
        const chunk = c.chunks[0];
        const k = Math.min(n - got, chunk.length - c.off);
        mem.set(chunk.subarray(c.off, c.off + k), addr + got);
        got += k;
        c.off += k;
        if (c.off === chunk.length) {
          c.chunks.shift();
          c.off = 0;
        }
      }
      return got || (c.state === 2 ? -1 : 0);
    },
    tcp_write(id, addr, n) {
      const c = conns.get(id);
      if (!c || c.state !== 1) return false;
      c.sock.write(Buffer.from(heap().subarray(addr, addr + n)));
      return true;
    },
    tcp_buffered(id) {
      const c = conns.get(id);
      return c && c.state === 1 ? c.sock.writableLength : 0;
    },
    tcp_close(id) {
      const c = conns.get(id);
      if (!c) return;
      conns.delete(id);
      c.wake = null; // lets the Python side of the proxy go
      c.sock.destroy();
    },
  };
}

function putFile(FS, spec) {
  const eq = spec.indexOf("=");
  if (eq < 1) usage(`--put wants HOST=PATH, not ${spec}`);
  const dest = spec.slice(eq + 1);
  let dir = "";
  for (const part of path.posix.dirname(dest).split("/").filter(Boolean)) {
    dir += "/" + part;
    if (!FS.analyzePath(dir).exists) FS.mkdir(dir);
  }
  FS.writeFile(dest, fs.readFileSync(spec.slice(0, eq)));
}

const a = parseArgs(process.argv.slice(2));
let loadMicroPython;
try {
  ({ loadMicroPython } = await import(pathToFileURL(path.join(PACKAGE, "micropython.mjs"))));
} catch (e) {
  process.stderr.write(`run_wasm: cannot load the MicroPython WebAssembly package from ` +
    `${PACKAGE} (${e.message}): run scripts/bootstrap.sh or set MPWASM_PACKAGE\n`);
  process.exit(3);
}
const mp = await loadMicroPython({
  heapsize: a.heap,
  romfs: fs.readFileSync(a.image),
  stdout: (line) => process.stdout.write(line + "\n"),
  stderr: (line) => process.stderr.write(line + "\n"),
});
for (const spec of a.puts) putFile(mp.FS, spec);
mp.registerJsModule("wasmhost", makeHost(() => mp._module.HEAPU8, () => live));
// Before the app: the port mounts the image at /rom, and the app must come from there. This
// variant freezes micropython-lib's Python os, time, binascii, io and collections over the C
// modules a board has (binascii alone would add 7 KB to the heap): use the C ones. It has no
// socket module; firmware/timesync.py imports one for NTP, which the host clock makes moot.
run(`
import sys
for name in ("os", "time", "binascii", "io", "collections"):
    sys.modules[name] = __import__("u" + name)


class socket:
    AF_INET = 2
    SOCK_DGRAM = 2

    def getaddrinfo(*args):
        raise OSError("no UDP on the WebAssembly port: NTP is not available")


sys.modules["socket"] = socket
del name, socket
sys.path[:] = ["/rom", ".frozen"]
sys.argv[:] = ${JSON.stringify([a.module, ...a.args])}
`);

// This port's gc.collect() only asks for a collection, which happens once control is back in
// JS (no Python frame running): Python code cannot see its live heap. So it is measured here,
// between Python calls, right after a collection.
const gc = mp.pyimport("gc");
function liveHeap() {
  gc.collect();
  return gc.mem_alloc();
}
let live = liveHeap();

if (a.ram) {
  // firmware.build.ram_report's probe, measured from here: each step cumulative over base.
  const base = live;
  const steps = [a.module, ...a.args].map((m) => {
    const err = run(`__import__(${JSON.stringify(m)})`, false);
    return [m, err === null ? liveHeap() - base : null, err];
  });
  process.stdout.write(JSON.stringify({ base, steps }) + "\n");
  process.exit(0);
}
run("__import__(sys.argv[0])");
// What firmware/boards/wasm.py reports as the heap in use: the last sample, at most 100 ms old.
setInterval(() => {
  live = liveHeap();
}, 100).unref();

// Runs code at the top level; a Python exception ends the process (exit status 1, or that of
// SystemExit) unless fatal is false: then its text is returned (null without one).
function run(code, fatal = true) {
  try {
    mp.runPython(code);
    return null;
  } catch (e) {
    if (e.name !== "PythonError") throw e;
    if (!fatal) return e.message.trim().split("\n").pop();
    if (e.type !== "SystemExit") {
      process.stderr.write(e.message.endsWith("\n") ? e.message : e.message + "\n");
      process.exit(1);
    }
    const status = /(\d+)\s*$/.exec(e.message);
    process.exit(status ? Number(status[1]) : 0);
  }
}
