/**
 * Reading the reference lists of docs/*.md, for tests that compare them
 * with the code. A list item names its keys first, then a note, then what
 * they mean: "- `A`, `B`, default `x`: meaning", wrapped onto lines that
 * start with two spaces.
 * @module
 */

/** One list item: its keys, the note between keys and colon ("default `2s`", "required"), and its full text. */
export interface KeyItem {
  /** The keys it names, without backticks. */
  keys: string[];
  /** What comes between the keys and the first colon, or "". */
  note: string;
  /** The whole item, continuation lines joined. */
  text: string;
}

/** The text of docs/`file` from the first line containing `from` to the next line containing `to`. */
export async function docSection(file: string, from: string, to: string): Promise<string> {
  const text = await Deno.readTextFile(new URL(`../../docs/${file}`, import.meta.url));
  const start = text.indexOf(from);
  if (start < 0) throw new Error(`docs/${file} has no "${from}"`);
  const end = text.indexOf(to, start + from.length);
  if (end < 0) throw new Error(`docs/${file} has no "${to}" after "${from}"`);
  return text.slice(start, end);
}

/** The list items of `markdown` that start with a key in backticks. */
export function keyItems(markdown: string): KeyItem[] {
  const texts: string[] = [];
  let current: string | null = null;
  for (const line of markdown.split("\n")) {
    if (line.startsWith("- `")) {
      if (current !== null) texts.push(current);
      current = line;
    } else if (current !== null && line.startsWith("  ")) {
      current += " " + line.trim();
    } else if (current !== null) {
      texts.push(current);
      current = null;
    }
  }
  if (current !== null) texts.push(current);
  return texts.flatMap((text) => {
    const m = /^- ((?:`[^`]+`, )*`[^`]+`)(?:, ([^:]*))?: /.exec(text);
    if (!m) return [];
    const keys = [...(m[1] as string).matchAll(/`([^`]+)`/g)].map((k) => k[1] as string);
    return [{ keys, note: m[2] ?? "", text }];
  });
}

/**
 * The defaults an item's note states, one per key, when each is a value to
 * write in the file ("default `2s`", "defaults `10M`, `5`"); null when the
 * note states none that can be written ("required", "no default").
 */
export function statedDefaults(item: KeyItem): string[] | null {
  const m = /^defaults? ((?:`[^`]*`(?:, )?)+)(?: \(seconds\))?$/.exec(item.note);
  if (!m) return null;
  const values = [...(m[1] as string).matchAll(/`([^`]*)`/g)].map((v) => v[1] as string);
  return values.length === item.keys.length ? values : null;
}
