import BuilddShared
import Hummingbird

/// The status pages: `/builders` (per processor its builders and queue), `/builds/ID` (history, files and
/// a live log tail) and `/queue/PROCESSOR` (waiting builds in dispatch order). Each page is a small
/// shell whose script reads the JSON API and redraws every two seconds, so pages follow the farm without
/// a reload. Everything from the database reaches the page as text nodes, never as markup.
extension HTTPAPI {
    func addPageRoutes(to router: Router<BasicRequestContext>) {
        router.get("/") { _, _ in Response(status: .seeOther, headers: [.location: "/builders"]) }
        router.get("/builders") { request, _ in
            try await self.pageOrSignIn(request) { Self.page(title: "Builders", script: Self.buildersScript) }
        }
        router.get("/builds/:id") { request, context in
            _ = try context.parameters.require("id", as: Int64.self)
            return try await self.pageOrSignIn(request) { Self.page(title: "Build", script: Self.buildScript) }
        }
        router.get("/queue/:processor") { request, context in
            _ = try context.parameters.require("processor")
            return try await self.pageOrSignIn(request) { Self.page(title: "Queue", script: Self.queueScript) }
        }
    }

    /// A page, or the way to the sign-in form when reading needs a token and the request has none. The
    /// page itself holds nothing: its script reads the API, which checks the token (the cookie) again.
    func pageOrSignIn(_ request: Request, _ page: () -> Response) async throws -> Response {
        let signIn = Response(status: .seeOther, headers: [.location: "/signin"])
        let caller: Caller
        do {
            caller = try await self.caller(request, route: "page")
        } catch where Self.bearer(request) == nil {
            return signIn  // a sign-in cookie whose token was removed or expired: sign in again
        }
        guard Access.allows(caller.role, .read, anonymousRead: anonymousRead) else { return signIn }
        return page()
    }

    static func page(title: String, script: String) -> Response {
        let html = """
            <!doctype html>
            <html lang="en">
            <head>
            <meta charset="utf-8">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <title>\(title) - buildd</title>
            <style>\(style)</style>
            </head>
            <body>
            <header><a class="brand" href="/builders">buildd</a> <a href="/builders">Builders</a>
            <span id="updated" class="muted">loading...</span></header>
            <main id="app"><p class="muted">Loading...</p></main>
            <script>\(common)\(script)</script>
            </body>
            </html>
            """
        return Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"],
                        body: ResponseBody(byteBuffer: ByteBuffer(string: html)))
    }

    static let style = """
        body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
        header{background:#2b2b2b;color:#eee;padding:8px 16px;display:flex;gap:16px;align-items:baseline}
        header a{color:#eee;text-decoration:none}.brand{font-weight:bold;font-size:16px}
        #updated{margin-left:auto;font-size:12px}main{padding:8px 16px;max-width:1200px}
        h2{margin:20px 0 6px;font-size:17px}table{border-collapse:collapse;width:100%;background:#fff}
        th,td{border-bottom:1px solid #e3e3e3;padding:4px 8px;text-align:left;vertical-align:top}
        th{background:#f0f0f0;font-weight:600}.muted{color:#888}
        table.builders{table-layout:fixed}.builders th:nth-child(1){width:22%}.builders th:nth-child(2){width:10%}
        .builders th:nth-child(4){width:20%}td{overflow-wrap:anywhere}
        .badge{display:inline-block;padding:0 6px;border-radius:3px;font-size:12px;color:#fff;background:#777}
        .s-idle{background:#2e7d32}.s-building{background:#1565c0}.s-aborting,.s-manual{background:#ef6c00}
        .s-failed{background:#c62828}.s-dirty,.s-cleaning{background:#6a1b9a}.s-offline,.s-removed{background:#9e9e9e}
        .b-FULLYBUILT{background:#2e7d32}.b-BUILDING,.b-GATHERING{background:#1565c0}.b-NEEDSBUILD{background:#6d6d6d}
        .b-FAILEDTOBUILD,.b-CHROOTWAIT,.b-FAILEDTOUPLOAD{background:#c62828}.b-MANUALDEPWAIT,.b-CANCELLING{background:#ef6c00}
        .b-CANCELLED,.b-SUPERSEDED{background:#9e9e9e}
        pre{background:#1e1e1e;color:#ddd;padding:8px;overflow:auto;max-height:22em;font-size:12px;margin:4px 0}
        .summary{margin:2px 0 8px}.failnotes{color:#c62828}
        """

    /// Helpers shared by the pages: `el` builds elements from text only; `refresh` redraws every 2 s.
    static let common = """
        'use strict';
        function el(tag, attrs, ...children) {
          const node = document.createElement(tag);
          for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
          for (const child of children.flat(Infinity)) {
            if (child === null || child === undefined) continue;
            node.append(child instanceof Node ? child : document.createTextNode(String(child)));
          }
          return node;
        }
        function badge(text, prefix) { return el('span', {class: 'badge ' + prefix + text}, text); }
        function duration(seconds) {
          if (seconds === null || seconds === undefined) return 'unknown';
          seconds = Math.round(seconds);
          if (seconds < 60) return seconds + ' s';
          if (seconds < 3600) return Math.floor(seconds / 60) + ' min ' + (seconds % 60) + ' s';
          return Math.floor(seconds / 3600) + ' h ' + Math.floor(seconds % 3600 / 60) + ' min';
        }
        function tail(text, lines) { return (text || '').split('\\n').slice(-lines).join('\\n'); }
        async function getJSON(path) {
          const response = await fetch(path, {cache: 'no-store'});
          if (!response.ok) throw new Error(path + ': HTTP ' + response.status);
          return response.json();
        }
        function refresh(draw) {
          const app = document.getElementById('app');
          const updated = document.getElementById('updated');
          async function tick() {
            try {
              const content = await draw();
              app.replaceChildren(...[content].flat(Infinity).filter(node => node !== null && node !== undefined));
              updated.textContent = 'updated ' + new Date().toLocaleTimeString();
            } catch (error) {
              updated.textContent = 'not updated: ' + error.message;
            }
            setTimeout(tick, 2000);
          }
          tick();
        }

        """

    static let buildersScript = """
        refresh(async () => {
          const [processors, builders] = await Promise.all([getJSON('/v1/processors'), getJSON('/v1/builders')]);
          if (processors.length === 0) return el('p', {class: 'muted'}, 'No processors yet: buildd-master processor add NAME');
          return processors.map(p => {
            const mine = builders.filter(b => b.processors.includes(p.name));
            const wait = p.waiting === 0 ? 'no wait' : 'estimated wait ' + duration(p.estimated_wait_seconds);
            return el('section', {id: 'processor-' + p.name},
              el('h2', {}, p.name),
              el('p', {class: 'summary'},
                el('a', {href: '/queue/' + encodeURIComponent(p.name), class: 'queue-link'},
                   p.waiting + ' waiting'),
                ' - ' + p.running + ' building - ' + wait +
                (p.oldest_wait_seconds ? ' - oldest waiting ' + duration(p.oldest_wait_seconds) : '')),
              mine.length === 0 ? el('p', {class: 'muted'}, 'No builders.') :
              el('table', {class: 'builders'},
                el('tr', {}, el('th', {}, 'Builder'), el('th', {}, 'State'), el('th', {}, 'Current build'),
                   el('th', {}, 'Status')),
                mine.map(b => el('tr', {class: 'builder', 'data-name': b.name},
                  el('td', {}, b.name, el('div', {class: 'muted'}, b.kind === 'xmlrpc' ? 'launchpad-buildd ' + b.url : 'agent')),
                  el('td', {}, badge(b.state, 's-'), b.manual ? el('div', {class: 'muted'}, 'manual mode') : null),
                  el('td', {}, b.current_build ?
                     [el('a', {href: '/builds/' + b.current_build}, '#' + b.current_build + ' ' + (b.current_title || '')),
                      b.log_tail ? el('pre', {class: 'logtail'}, tail(b.log_tail, 5)) : null] :
                     el('span', {class: 'muted'}, b.current_title || '-')),
                  el('td', {}, b.builderok ? 'ok' : el('span', {class: 'failnotes'}, b.failnotes || 'not ok'),
                     b.builderok && b.failnotes ? el('div', {class: 'muted'}, b.failnotes) : null)))));
          });
        });
        """

    static let buildScript = """
        const buildID = location.pathname.split('/').pop();
        refresh(async () => {
          const d = await getJSON('/v1/builds/' + buildID);
          const b = d.build;
          return [
            el('h2', {}, 'Build #' + b.id + ': ' + b.source + ' ' + b.version + ' on ' + b.archseries),
            el('p', {class: 'summary'}, badge(b.status, 'b-'), ' attempt ' + b.attempt,
               b.builder ? ' on ' + b.builder : '', b.score !== null ? ' - score ' + b.score : '',
               b.failnotes ? el('div', {class: 'failnotes'}, b.failnotes) : null),
            el('h2', {}, 'History'),
            el('table', {class: 'history'}, el('tr', {}, el('th', {}, 'When'), el('th', {}, 'Status'),
                 el('th', {}, 'Attempt'), el('th', {}, 'Builder'), el('th', {}, 'Note')),
               d.history.map(e => el('tr', {}, el('td', {}, e.at), el('td', {}, badge(e.status, 'b-')),
                 el('td', {}, e.attempt), el('td', {}, e.builder || '-'), el('td', {}, e.message || '')))),
            el('h2', {}, 'Files'),
            d.files.length === 0 ? el('p', {class: 'muted'}, 'None yet.') :
            el('table', {class: 'files'}, el('tr', {}, el('th', {}, 'File'), el('th', {}, 'Kind'), el('th', {}, 'Size'),
                 el('th', {}, 'SHA-256')),
               d.files.map(f => el('tr', {},
                 el('td', {}, el('a', {href: '/v1/builds/' + b.id + '/files/' + encodeURIComponent(f.name)}, f.name)),
                 el('td', {}, f.kind), el('td', {}, f.size + ' bytes'), el('td', {class: 'muted'}, f.sha256)))),
            d.logtail ? [el('h2', {}, 'Log tail'), el('pre', {class: 'logtail', id: 'logtail'}, d.logtail)] : null,
          ];
        });
        """

    static let queueScript = """
        const processor = decodeURIComponent(location.pathname.split('/').pop());
        const needs = r => !r ? '' : (r.virtualized ? 'virtualized' : 'not virtualized')
          + (r.constraints && r.constraints.length ? ', ' + r.constraints.slice().sort().join(', ') : '');
        refresh(async () => {
          const queue = await getJSON('/v1/queue/' + encodeURIComponent(processor));
          return [
            el('h2', {}, 'Queue of ' + processor + ': ' + queue.length + ' waiting'),
            queue.length === 0 ? el('p', {class: 'muted'}, 'Nothing waiting.') :
            el('table', {class: 'queue'}, el('tr', {}, el('th', {}, '#'), el('th', {}, 'Build'), el('th', {}, 'Arch series'),
                 el('th', {}, 'Score'), el('th', {}, 'Waiting'), el('th', {}, 'Needs')),
               queue.map(q => el('tr', {class: 'queued'}, el('td', {}, q.position),
                 el('td', {}, el('a', {href: '/builds/' + q.id}, '#' + q.id + ' ' + q.source + ' ' + q.version)),
                 el('td', {}, q.archseries), el('td', {}, q.score + (q.manual ? ' (manual)' : '')),
                 el('td', {}, duration(q.waiting_seconds)),
                 el('td', {}, needs(q.requirements), q.waiting_because ? el('div', {class: 'why'}, q.waiting_because) : '')))),
          ];
        });
        """
}
