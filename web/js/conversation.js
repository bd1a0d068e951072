// The conversation editor: user and assistant turns that can be added, edited,
// re-roled and removed; the system prompt lives in its own field.

/**
 * @param {HTMLOListElement} list
 * @returns {{ add(role: string, content?: string, focus?: boolean): void, turns(): Array<{role: string, content: string}> }}
 */
export function createConversation(list) {
  const renumber = () => {
    [...list.children].forEach((item, index) => {
      const number = index + 1;
      item.querySelector(".turn-title").textContent = `Turn ${number}`;
      item.querySelector("select").setAttribute("aria-label", `Turn ${number} role`);
      item.querySelector("textarea").setAttribute("aria-label", `Turn ${number} message`);
      item.querySelector(".remove-turn").setAttribute("aria-label", `Remove turn ${number}`);
    });
  };

  const add = (role, content = "", focus = false) => {
    const item = document.createElement("li");
    item.className = "turn";
    const head = document.createElement("div");
    head.className = "turn-head";
    const title = document.createElement("span");
    title.className = "turn-title";
    const select = document.createElement("select");
    select.className = "turn-role";
    for (const value of ["user", "assistant"]) {
      const option = document.createElement("option");
      option.value = value;
      option.textContent = value;
      select.append(option);
    }
    select.value = role;
    item.dataset.role = role;
    select.addEventListener("change", () => {
      item.dataset.role = select.value;
    });
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "remove-turn quiet";
    remove.textContent = "Remove";
    remove.addEventListener("click", () => {
      const next = item.nextElementSibling ?? item.previousElementSibling;
      item.remove();
      renumber();
      (next?.querySelector("textarea") ?? document.getElementById("add-user"))?.focus();
    });
    head.append(title, select, remove);
    const text = document.createElement("textarea");
    text.className = "turn-content";
    text.rows = 3;
    text.value = content;
    item.append(head, text);
    list.append(item);
    renumber();
    if (focus) text.focus();
  };

  const turns = () =>
    [...list.children].map((item) => ({
      role: item.querySelector("select").value,
      content: item.querySelector("textarea").value,
    }));

  return { add, turns };
}
