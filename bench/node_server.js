// The reference: a minimal Node socket.io 4.x server with the benchmark's routes.
//
//   node bench/node_server.js PORT
//
// A socket joins room "user:<auth.user_id>" (no token check, no persistence, like the
// stock Flask-SocketIO baseline). POST /api/notifications takes the product's body
// ({"user_id"} or {"user_ids"}, type, title, body, data) and emits "notification" to
// each user's room. GET /healthz answers 200 so the bench knows it is up.
"use strict";

const http = require("http");
const { Server } = require("socket.io");

const port = Number(process.argv[2] || 8100);
let nextId = 1;

function send(res, status, obj) {
  const body = JSON.stringify(obj);
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) });
  res.end(body);
}

function readJson(req, done) {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    try {
      done(JSON.parse(Buffer.concat(chunks).toString("utf8")));
    } catch (err) {
      done(null);
    }
  });
}

function notify(io, body) {
  const users = Array.isArray(body.user_ids) ? body.user_ids : [body.user_id];
  const createdAt = new Date().toISOString();
  return users.map((user) => {
    const id = nextId++;
    io.to(`user:${user}`).emit("notification", {
      id, type: body.type, title: body.title, body: body.body ?? null,
      data: body.data ?? {}, created_at: createdAt, read_at: null,
    });
    return { id, user_id: String(user) };
  });
}

const server = http.createServer();
const io = new Server(server, {
  cors: { origin: ["http://localhost:3000"], credentials: true },
  pingInterval: 25000,
  pingTimeout: 60000,
});

// socket.io answers its own path first; everything else comes here.
server.on("request", (req, res) => {
  if (req.url.startsWith("/socket.io/")) return;
  if (req.method === "GET" && req.url === "/healthz") return send(res, 200, { status: "ok" });
  if (req.method === "POST" && req.url === "/api/notifications") {
    return readJson(req, (body) => {
      if (!body || (!body.user_id && !Array.isArray(body.user_ids))) {
        return send(res, 400, { error: { code: "validation_error", message: "user_id required" } });
      }
      send(res, 201, { notifications: notify(io, body) });
    });
  }
  send(res, 404, { error: { code: "not_found", message: "no such route" } });
});

io.on("connection", (socket) => {
  const user = socket.handshake.auth && socket.handshake.auth.user_id;
  if (user === undefined) return socket.disconnect(true);
  socket.join(`user:${user}`);
  socket.emit("auth_success", { user_id: String(user), unread_count: 0 });
});

server.listen(port, "127.0.0.1");
