import BuilddShared
import Hummingbird

/// The live status pages: `/builders` (per processor its builders and queue) and `/queue/PROCESSOR` (waiting
/// builds in dispatch order). Each page is the shared layout around a script that reads the JSON API and
/// redraws every two seconds, so pages follow the farm without a reload; without JavaScript they point to
/// the server-drawn pages. Everything from the database reaches the page as text nodes, never as markup.
extension HTTPAPI {
    func addPageRoutes(to router: Router<BasicRequestContext>) {
        router.get("/") { _, _ in Response(status: .seeOther, headers: [.location: "/builders"]) }
        router.get("/builders") { request, _ in
            try await self.pageOrSignIn(request) { Self.page(title: "Builders", viewer: $0, script: Self.buildersScript) }
        }
        router.get("/queue/:processor") { request, context in
            _ = try context.parameters.require("processor")
            return try await self.pageOrSignIn(request) { Self.page(title: "Queue", viewer: $0, script: Self.queueScript) }
        }
    }

    /// A page, or the way to the sign-in form when reading needs a token and the request has none (``pageFor``).
    /// The page itself holds nothing: its script reads the API, which checks the token (the cookie) again.
    func pageOrSignIn(_ request: Request, _ page: @escaping (Page.Viewer) -> Response) async throws -> Response {
        try await pageFor(request) { _, viewer in page(viewer) }
    }

    static func page(title: String, viewer: Page.Viewer, script: String) -> Response {
        let body = """
            <h1>\(title) <span id="updated" class="muted">loading...</span></h1>
            <noscript><p>This page follows the farm with JavaScript. Without it, see <a href="/builds">the builds</a>
            and each builder's own page.</p></noscript>
            <div id="app"><p class="muted">Loading...</p></div>
            """
        return Page.response(title: title, section: title == "Builders" ? .builders : .none, viewer: viewer, body: body,
                             script: common + script)
    }

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
                  el('td', {}, el('a', {href: '/builders/' + encodeURIComponent(b.name)}, b.name),
                     el('div', {class: 'muted'}, b.kind === 'xmlrpc' ? 'launchpad-buildd ' + b.url : 'agent')),
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
