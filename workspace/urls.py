from django.contrib.auth import views as auth_views
from django.urls import path

from workspace import views

app_name = "workspace"

urlpatterns = [
    path("", views.queue, name="queue"),
    path("poll/", views.queue_poll, name="queue-poll"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("mine/", views.my_leads, name="mine"),
    path("team/", views.team, name="team"),
    path("team/reassign/", views.reassign, name="reassign"),
    path("inbox/", views.inbox, name="inbox"),
    path("inbox/read/", views.inbox_read, name="inbox-read"),
    path("inbox/badge/", views.inbox_badge, name="inbox-badge"),
    path("leads/<int:pk>/", views.lead_detail, name="lead"),
    path("leads/<int:pk>/claim/", views.claim, name="claim"),
    path("leads/<int:pk>/release/", views.release, name="release"),
    path("leads/<int:pk>/call/", views.call_log, name="call"),
    path("leads/<int:pk>/note/", views.note_add, name="note"),
    path("leads/<int:pk>/bant/", views.bant_save, name="bant"),
    path("leads/<int:pk>/sql/", views.mark_sql, name="sql"),
    path("leads/<int:pk>/return/", views.return_to_nurture, name="return"),
    path("leads/<int:pk>/close/", views.close, name="close"),
    path(
        "leads/<int:pk>/tasks/<str:kind>/<int:task_id>/<str:action>/",
        views.task_action,
        name="task",
    ),
]
