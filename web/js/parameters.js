// The parameter controls. Defaults and ranges come from /web/parameters.json (the seed's
// defaults, this deployment's ranges) and are shown beside each control. Values are sent
// as typed, never clamped: the server decides, and its error names the param at fault.

export const NUMERIC_PARAMETERS = ["temperature", "top_p", "max_tokens", "presence_penalty", "frequency_penalty"];

/** The range as mathematics writes it: [0, 1], or (0, 1] when the minimum is excluded. */
function describeRange(range) {
  return `${range.minExclusive === true ? "(" : "["}${range.min}, ${range.max}]`;
}

/** Writes each control's default and range beside it, and sets min/max so the browser marks values outside. */
export function showParameterInfo(info) {
  for (const name of NUMERIC_PARAMETERS) {
    const input = document.getElementById(name);
    const hint = document.getElementById(`${name}-hint`);
    const range = info.ranges?.[name];
    const documented = info.documented_ranges?.[name];
    if (input === null || hint === null || range === undefined) continue;
    input.min = String(range.min);
    input.max = String(range.max);
    const widened = documented !== undefined && describeRange(documented) !== describeRange(range);
    hint.textContent =
      `default ${info.defaults?.[name]} · range ${describeRange(range)}` + (widened ? ` (documented ${describeRange(documented)})` : "");
  }
  const stopHint = document.getElementById("stop-hint");
  if (stopHint !== null && typeof info.max_stop_strings === "number") {
    stopHint.textContent = `default none · up to ${info.max_stop_strings}, one per line; write \\n for a newline`;
  }
}

/** Puts every control back to the seed's default. */
export function resetParameters(defaults) {
  for (const name of NUMERIC_PARAMETERS) {
    const input = document.getElementById(name);
    if (input !== null && defaults[name] !== undefined) input.value = String(defaults[name]);
  }
  document.getElementById("stop").value = "";
}

/** `\n`, `\r`, `\t` and `\\` as typed in the stop field, to the characters they name. */
export function unescapeStop(text) {
  return text.replace(/\\([nrt\\])/g, (_, letter) => ({ n: "\n", r: "\r", t: "\t", "\\": "\\" })[letter]);
}

/**
 * The request fields from the controls, in the seed's order. An empty numeric field is
 * left out (the server's default applies); penalties are sent when not 0; one stop string
 * is sent as a string (the seed's type), several as an array.
 */
export function readParameters() {
  const fields = {};
  for (const name of NUMERIC_PARAMETERS) {
    const value = document.getElementById(name).value.trim();
    if (value === "") continue;
    const number = Number(value);
    if (name.endsWith("_penalty") && number === 0) continue;
    fields[name] = number;
  }
  const stops = document
    .getElementById("stop")
    .value.split("\n")
    .filter((line) => line !== "")
    .map(unescapeStop);
  if (stops.length === 1) fields.stop = stops[0];
  else if (stops.length > 1) fields.stop = stops;
  if (document.getElementById("stream").checked) {
    fields.stream = true;
    fields.stream_options = { include_usage: true };
  }
  return fields;
}
