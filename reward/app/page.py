"""The labeling page's layout: every component, and nothing it does (handlers.py wires the events).

Candidate texts are shown in read-only text boxes, so HTML or script in a model output is shown as text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_SLOTS = 9
SHORTCUTS = (
    "Keys: **1-9** rank the highlighted candidate, **↑/↓** move, **Enter** submit, **s** skip, "
    "**u** all unacceptable, **n** next item."
)
# A plain form: logging out is a POST to the server, which ends the session and clears the cookie.
LOGOUT_FORM = (
    '<form method="post" action="logout"><button id="logout-btn" type="submit">Log out</button></form>'
)

# Keyboard shortcuts: 1-9 give the highlighted candidate that rank and move to the next one; arrow keys
# or j/k move the highlight; Enter submits, s skips, u marks all unacceptable, n asks for the next item.
# Keys typed into a text box (the comment) are left alone.
KEYBOARD_SCRIPT = """
<script>
(() => {
  let cursor = 0;
  const rows = () => [...document.querySelectorAll('[id^="cand-row-"]')].filter((el) => el.offsetParent !== null);
  const paint = () => rows().forEach((row, i) => row.classList.toggle('kb-cursor', i === cursor));
  const click = (id) => { const el = document.getElementById(id); if (el) { cursor = 0; el.click(); } };
  document.addEventListener('change', (e) => {
    const row = e.target.closest && e.target.closest('[id^="cand-row-"]');
    if (row) { const all = rows(); cursor = Math.min(all.indexOf(row) + 1, all.length - 1); paint(); }
  }, true);
  document.addEventListener('keydown', (e) => {
    const t = e.target;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (t && (t.tagName === 'TEXTAREA' || (t.tagName === 'INPUT' && t.type !== 'radio'))) return;
    if (e.key === 'n') { click('next-btn'); e.preventDefault(); return; }
    const all = rows();
    if (!all.length) return;
    cursor = Math.min(cursor, all.length - 1);
    if (/^[1-9]$/.test(e.key)) {
      const at = cursor;  // the click's change event also moves the cursor: set it, do not add to it
      const input = all[at].querySelector(`input[type="radio"][value="${e.key}"]`);
      if (input) { input.click(); cursor = Math.min(at + 1, all.length - 1); }
    } else if (e.key === 'ArrowDown' || e.key === 'j') { cursor = Math.min(cursor + 1, all.length - 1); }
    else if (e.key === 'ArrowUp' || e.key === 'k') { cursor = Math.max(cursor - 1, 0); }
    else if (e.key === 'Enter') { click('submit-btn'); }
    else if (e.key === 's') { click('skip-btn'); }
    else if (e.key === 'u') { click('unacceptable-btn'); }
    else { return; }
    e.preventDefault();
    paint();
  });
  setInterval(paint, 500);
})();
</script>
"""
CSS = ".kb-cursor { outline: 3px solid #f59e0b; border-radius: 8px; }"


@dataclass
class Page:
    """The components handlers read and write."""

    demo: Any
    current: Any  # gr.State: {item_id, k} of the item on screen (no secrets: the session is in a cookie)
    who: Any
    status: Any
    progress: Any
    prompt: Any
    rows: list[Any]
    texts: list[Any]
    radios: list[Any]
    comment: Any
    next_button: Any
    submit_button: Any
    skip_button: Any
    unacceptable_button: Any
    history_button: Any
    history: Any
    admin_tab: Any
    progress_button: Any
    progress_json: Any
    items_file: Any
    load_button: Any
    export_button: Any
    round_number: Any
    close_round_button: Any
    admin_result: Any

    @property
    def item_outputs(self) -> list[Any]:
        """What showing an item updates, in the order `handlers.show` returns."""
        return [self.current, self.prompt, *self.rows, *self.texts, *self.radios, self.comment, self.progress]


def build_page(guidelines_text: str) -> Page:
    """Lay the page out inside a new `gr.Blocks` (call `.demo` to get it)."""
    import gradio as gr

    with gr.Blocks(title="Rank model outputs") as demo:
        current = gr.State(None)
        with gr.Row():
            gr.Markdown("# Rank model outputs")
            who = gr.Markdown("", elem_id="who")
            gr.HTML(LOGOUT_FORM)
        status = gr.Markdown("", elem_id="status")
        with gr.Tab("Label"), gr.Row():
            with gr.Column(scale=3):
                progress = gr.Markdown("", elem_id="progress")
                gr.Markdown(SHORTCUTS)
                prompt = gr.Textbox(label="Prompt", interactive=False, lines=2, elem_id="prompt")
                rows, texts, radios = [], [], []
                for slot in range(MAX_SLOTS):
                    with gr.Row(visible=False, elem_id=f"cand-row-{slot}") as row:
                        texts.append(
                            gr.Textbox(
                                label=f"Candidate {slot + 1}",
                                interactive=False,
                                lines=2,
                                scale=4,
                                elem_id=f"cand-text-{slot}",
                            )
                        )
                        radios.append(
                            gr.Radio(choices=[], label="Rank (1 = best)", scale=2, elem_id=f"rank-{slot}")
                        )
                    rows.append(row)
                comment = gr.Textbox(label="Comment (optional)", lines=1, elem_id="comment")
                with gr.Row():
                    next_button = gr.Button("Next item (n)", elem_id="next-btn")
                    submit_button = gr.Button(
                        "Submit ranking (Enter)", variant="primary", elem_id="submit-btn"
                    )
                    skip_button = gr.Button("Skip (s)", elem_id="skip-btn")
                    unacceptable_button = gr.Button(
                        "All unacceptable (u)", variant="stop", elem_id="unacceptable-btn"
                    )
            with gr.Column(scale=2, elem_id="guidelines-column"):
                gr.Markdown(guidelines_text, elem_id="guidelines")
        with gr.Tab("My history"):
            history_button = gr.Button("Refresh", elem_id="history-btn")
            history = gr.JSON(label="My records")
        with gr.Tab("Admin", visible=False) as admin_tab:
            progress_button = gr.Button("Everyone's progress")
            progress_json = gr.JSON(label="Progress")
            items_file = gr.Textbox(label="Item file name in the server's items folder (JSONL)")
            load_button = gr.Button("Load items")
            export_button = gr.Button("Export rankings, pairs and agreement")
            with gr.Row():
                round_number = gr.Number(
                    label="Iterate round", precision=0, minimum=1, elem_id="round-number"
                )
                close_round_button = gr.Button(
                    "Close round (the loop exports what it has)", variant="stop", elem_id="close-round-btn"
                )
            admin_result = gr.JSON(label="Result")
    return Page(
        demo=demo,
        current=current,
        who=who,
        status=status,
        progress=progress,
        prompt=prompt,
        rows=rows,
        texts=texts,
        radios=radios,
        comment=comment,
        next_button=next_button,
        submit_button=submit_button,
        skip_button=skip_button,
        unacceptable_button=unacceptable_button,
        history_button=history_button,
        history=history,
        admin_tab=admin_tab,
        progress_button=progress_button,
        progress_json=progress_json,
        items_file=items_file,
        load_button=load_button,
        export_button=export_button,
        round_number=round_number,
        close_round_button=close_round_button,
        admin_result=admin_result,
    )
