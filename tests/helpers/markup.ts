/**
 * A small well-formedness check for the markup the status page renders.
 * @module
 */

/**
 * Whether `markup` is well-formed as far as an SVG needs: every tag closed in
 * order, attributes quoted, no stray `<` or `&` in text. Returns the problem, or null.
 */
export function markupProblem(markup: string): string | null {
  const stack: string[] = [];
  const tag = /<(\/?)([a-zA-Z][\w-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>/g;
  let at = 0;
  for (let m; (m = tag.exec(markup)) !== null;) {
    const text = markup.slice(at, m.index);
    if (/[<>]|&(?!#?\w+;)/.test(text)) return `stray character in text "${text}"`;
    at = tag.lastIndex;
    const [, closing, name, , selfClosing] = m as unknown as [string, string, string, string, string];
    if (closing) {
      if (stack.pop() !== name) return `</${name}> closes nothing open`;
    } else if (!selfClosing) stack.push(name);
  }
  if (/[<>]/.test(markup.slice(at))) return "a tag that does not parse";
  return stack.length === 0 ? null : `<${stack.join("><")}> left open`;
}
