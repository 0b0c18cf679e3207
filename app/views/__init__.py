"""The Streamlit pages, one script each, run by ``app/streamlit_app.py`` through ``st.navigation``.

Not named ``pages/``: on a deep link Streamlit lists a ``pages/`` directory next to the main
script as pages of its own. Importing a page draws nothing (``if __name__ == "__main__"``).
"""
