/**
 * The guarded `fetch` a tool gets as `ctx.fetch`: outbound HTTP limited to the hosts the tool declares
 * (`allowedHosts`). A URL is parsed the way fetch parses it (WHATWG URL), so what is checked is what
 * would be connected to: `http://allowed.com@evil.com/` is `evil.com`, `http://2130706433/` is
 * `127.0.0.1`. A refused URL (a host not allowed, a scheme other than http or https) throws a
 * non-retryable `ToolError` naming the host and the tool's allowed hosts, before any network I/O.
 *
 * Redirects are followed here, one hop at a time (`redirect: 'manual'` underneath), and each hop's host
 * is checked before it is requested: letting fetch follow them would reach a disallowed host before we
 * could look, and handing every 3xx to the tool would change what `fetch` means. Following keeps fetch's
 * rules: at most 20 hops; 303 (and 301/302 after a POST) becomes a GET without a body; `Authorization`,
 * `Cookie` and `Proxy-Authorization` are dropped when the origin changes. A caller that asks for
 * `redirect: 'manual'` or `'error'` gets fetch's own behaviour (its next request is checked anyway).
 * To replay a body on 307/308 the body is read once, up front (tool bodies are small JSON).
 *
 * Hosts are matched by name, not by where DNS points them: this stops a tool from being talked into
 * calling an attacker's server, not a hostile DNS answer for an allowed name.
 */
import { ToolError, type Tool, type ToolContext } from '../tools/index.js';

/** Redirect statuses fetch follows. */
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
/** Fetch's own limit on redirects. */
const MAX_REDIRECTS = 20;
/** Headers that describe a body; dropped when a redirect turns the request into a GET. */
const BODY_HEADERS = ['content-type', 'content-length', 'content-encoding', 'content-language', 'content-location'];
/** Credentials fetch does not carry to another origin. */
const CREDENTIAL_HEADERS = ['authorization', 'cookie', 'proxy-authorization'];

type Env = Readonly<Record<string, string | undefined>>;

/** One allowed host, ready to match: a name (or the suffix of a wildcard) and, when given, a port. */
interface HostRule {
  entry: string;
  host: string;
  wildcard: boolean;
  port?: string;
}

/**
 * Builds `ctx.fetch` for one call of `tool`: global fetch behind the tool's allowed hosts, with the
 * context's trace headers and abort signal added. See the file header for the rules.
 */
export function guardedFetch(tool: Pick<Tool, 'name' | 'allowedHosts'>, ctx: Pick<ToolContext, 'env' | 'signal' | 'traceHeaders'>): typeof globalThis.fetch {
  const refuse = (url: URL, redirectedFrom?: URL): never => {
    throw new ToolError(
      `${tool.name} may not fetch ${url.host}${redirectedFrom ? ` (a redirect from ${redirectedFrom.host})` : ''}: ` +
        `its allowed hosts are ${describeAllowed(tool.allowedHosts ?? [], ctx.env)}. The request was not sent.`,
    );
  };
  const check = (url: URL, redirectedFrom?: URL): void => {
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new ToolError(`${tool.name} may fetch only http and https URLs, not ${url.protocol}. The request was not sent.`);
    }
    if (tool.allowedHosts && !isAllowed(url, tool.allowedHosts, ctx.env)) refuse(url, redirectedFrom);
  };

  return async (input, init) => {
    const given = input instanceof Request ? input : undefined;
    // A Request always carries a signal, so for one without init.signal the activity's is added to it.
    const signal = init?.signal ?? (given ? AbortSignal.any([given.signal, ctx.signal]) : ctx.signal);
    const mode = init?.redirect ?? given?.redirect ?? 'follow';
    // Checked before the Request is built: fetch would reject a URL with userinfo without naming the host.
    let url = new URL(input instanceof Request ? input.url : input);
    check(url);
    const first = new Request(input, { ...init, signal, redirect: 'manual' });
    const headers = new Headers(first.headers);
    for (const [name, value] of Object.entries(ctx.traceHeaders)) if (!headers.has(name)) headers.set(name, value);
    let method = first.method;
    let body: ArrayBuffer | undefined = first.body ? await first.arrayBuffer() : undefined;
    for (let hops = 0; ; hops++) {
      const res = await fetch(url, { ...init, method, headers, body, signal, redirect: mode === 'follow' ? 'manual' : mode });
      if (mode !== 'follow') return res;
      const location = res.headers.get('location');
      if (!REDIRECT_STATUSES.has(res.status) || location === null) return res;
      await res.body?.cancel();
      if (hops === MAX_REDIRECTS) throw new ToolError(`${tool.name}: more than ${MAX_REDIRECTS} redirects from ${url.host}; the last was not followed.`);
      const next = new URL(location, url);
      check(next, url);
      if (res.status === 303 ? method !== 'HEAD' : (res.status === 301 || res.status === 302) && method === 'POST') {
        method = 'GET';
        body = undefined;
        for (const name of BODY_HEADERS) headers.delete(name);
      }
      if (next.origin !== url.origin) for (const name of CREDENTIAL_HEADERS) headers.delete(name);
      url = next;
    }
  };
}

/** True when one of `allowed` matches the URL's host and port. */
export function isAllowed(url: URL, allowed: readonly string[], env: Env): boolean {
  const port = portOf(url);
  return allowed.some((entry) => {
    const rule = ruleOf(entry, env);
    if (!rule) return false;
    const hostMatches = rule.wildcard ? url.hostname.endsWith(`.${rule.host}`) : url.hostname === rule.host;
    return hostMatches && (rule.port === undefined || rule.port === port);
  });
}

/** An entry as a rule: normalised the way URLs are (lower case, canonical IPs); `env:NAME` read now. */
function ruleOf(entry: string, env: Env): HostRule | undefined {
  if (entry.startsWith('env:')) {
    const value = env[entry.slice(4)];
    const url = value ? parseUrl(value) : undefined;
    return url && url.hostname ? { entry, host: url.hostname, wildcard: false, port: portOf(url) } : undefined;
  }
  const wildcard = entry.startsWith('*.');
  const url = parseUrl(`http://${wildcard ? entry.slice(2) : entry}`);
  if (!url) return undefined;
  const port = /:(\d+)$/.exec(entry)?.[1];
  return { entry, host: url.hostname, wildcard, ...(port ? { port: String(Number(port)) } : {}) };
}

/** The allowed hosts for an error message, with what each `env:` entry stands for now. */
function describeAllowed(allowed: readonly string[], env: Env): string {
  if (allowed.length === 0) return 'none';
  return allowed
    .map((entry) => {
      if (!entry.startsWith('env:')) return entry;
      const rule = ruleOf(entry, env);
      return rule ? `${entry} (${rule.host}:${rule.port})` : `${entry} (not set, or not a URL)`;
    })
    .join(', ');
}

/** The port a URL connects to: its own, or its scheme's default. */
function portOf(url: URL): string {
  return url.port || (url.protocol === 'https:' ? '443' : '80');
}

function parseUrl(text: string): URL | undefined {
  try {
    return new URL(text);
  } catch {
    return undefined;
  }
}
