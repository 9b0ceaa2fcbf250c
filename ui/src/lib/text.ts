// Text of values whose type the API leaves open (params, tags, errors).

/** A string as it is; anything else as JSON ("3", "true", "{...}"); "" for null or undefined. */
export function text(value: unknown): string {
  if (value === null || value === undefined) return "";
  return typeof value === "string" ? value : (JSON.stringify(value) ?? "");
}

/** The message of an error of any kind. */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : text(error);
}

/** A form field's text, trimmed ("" when absent or a file). */
export function field(form: FormData, name: string): string {
  const value = form.get(name);
  return typeof value === "string" ? value.trim() : "";
}
